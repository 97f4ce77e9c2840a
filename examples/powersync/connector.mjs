// A PowerSync backend connector for a Syncline gateway: tokens from your auth, uploads to the
// gateway's POST /upload. A rejected transaction (policy, constraint) is completed, so it never
// blocks the upload queue; the server's state wins and onRejected tells the app why.
// Transient trouble (503/429 with Retry-After, 401) throws: the SDK keeps the transaction and retries.
export class SynclineConnector {
  constructor({ endpoint, fetchToken, onRejected = () => {} }) {
    Object.assign(this, { endpoint, fetchToken, onRejected });
  }

  async fetchCredentials() {
    return { endpoint: this.endpoint, token: await this.fetchToken() };
  }

  async uploadData(db) {
    const tx = await db.getNextCrudTransaction();
    if (!tx) return;
    const res = await fetch(`${this.endpoint}/upload`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${await this.fetchToken()}` },
      body: JSON.stringify({ client_id: await db.getClientId(), transaction_id: tx.transactionId, crud: tx.crud.map((e) => e.toJSON()) })
    });
    if (!res.ok) throw new Error(`upload failed with HTTP ${res.status}: ${await res.text()}`);
    const outcome = await res.json(); // {status: "applied", write_checkpoint} | {status: "rejected", code, message, op_index}
    if (outcome.status === 'rejected') this.onRejected(outcome, tx);
    await tx.complete();
  }
}
