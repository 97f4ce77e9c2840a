// Vite for the workout web app: @powersync/web runs wa-sqlite in workers, which must stay
// ES modules and must not be pre-bundled. The build goes to build/workout-web/dist (served by
// serve.mjs); `make run` and `make demo` build it.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: './',
  optimizeDeps: { exclude: ['@journeyapps/wa-sqlite', '@powersync/web'] },
  worker: { format: 'es' },
  build: {
    outDir: process.env.WORKOUT_WEB_DIST || fileURLToPath(new URL('../../../build/workout-web/dist', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 4000
  }
});
