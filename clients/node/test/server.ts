// What the tests share: the module and redis-server they start
// ($RECSYS_MODULE or the workspace's target/release/librecsys.so;
// $RECSYS_REDIS_SERVER or redis-server on the PATH), and waiting for one.
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient } from 'redis';

const root = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
export const module_ = process.env.RECSYS_MODULE || join(root, 'target/release/librecsys.so');
export const binary = process.env.RECSYS_REDIS_SERVER || 'redis-server';

/** Waits until a server answers PING on `port` (20 s at most). */
export async function waitForServer(port: number): Promise<void> {
  const deadline = Date.now() + 20000;
  for (;;) {
    const c = createClient({ socket: { port, reconnectStrategy: false } });
    c.on('error', () => {});
    try {
      await c.connect();
      await c.ping();
      await c.close();
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`redis-server with ${module_} on ${port} did not start`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
