// The backend connector: tokens from the dev token endpoint (serve.mjs), uploads to the
// gateway's POST /upload, one CrudTransaction per request.
//   200 {status: "applied"}                         -> complete the transaction
//   200 {status: "rejected", code, message, ...}    -> record why, complete it: the server's state
//                                                       wins and the SDK reverts the local change
//   anything else (503/429 with Retry-After, 401)   -> throw: the SDK keeps it and retries later
import type { AbstractPowerSyncDatabase, PowerSyncBackendConnector, PowerSyncCredentials } from '@powersync/web';

export interface Rejection {
  code: string;
  message: string;
  op_index?: number;
}

export class SynclineConnector implements PowerSyncBackendConnector {
  private cached: { token: string; endpoint: string; expiresAt: number } | null = null;

  constructor(
    private user: string,
    private onRejected: (outcome: Rejection, crud: Record<string, unknown>[]) => Promise<void>
  ) {}

  async fetchCredentials(): Promise<PowerSyncCredentials> {
    const now = Date.now() / 1000;
    if (!this.cached || this.cached.expiresAt - now < 60) {
      const res = await fetch(`./dev/token?user=${encodeURIComponent(this.user)}`);
      if (!res.ok) throw new Error(`token endpoint: HTTP ${res.status}`);
      const { token, endpoint, expires_at } = await res.json();
      this.cached = { token, endpoint, expiresAt: expires_at };
    }
    return { endpoint: this.cached.endpoint, token: this.cached.token };
  }

  async uploadData(db: AbstractPowerSyncDatabase): Promise<void> {
    const tx = await db.getNextCrudTransaction();
    if (!tx) return;
    const { endpoint, token } = await this.fetchCredentials();
    const crud = tx.crud.map((entry) => entry.toJSON());
    const res = await fetch(`${endpoint}/upload`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ client_id: await db.getClientId(), transaction_id: tx.transactionId, crud })
    });
    if (res.status === 401) this.cached = null; // a fresh token on the retry
    if (!res.ok) throw new Error(`upload failed with HTTP ${res.status}: ${await res.text()}`);
    const outcome = await res.json();
    if (outcome.status === 'rejected') await this.onRejected(outcome, crud);
    else if (outcome.status !== 'applied') throw new Error(`unexpected upload answer: ${JSON.stringify(outcome)}`);
    await tx.complete();
  }
}
