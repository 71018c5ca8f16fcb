// The client against a real redis-server with the module, in RESP2 and RESP3.
// Module: $RECSYS_MODULE or the workspace's target/release/librecsys.so;
// server: $RECSYS_REDIS_SERVER or redis-server on the PATH.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'redis';
import { Recsys } from '../src/index.js';
import { binary, module_, waitForServer } from './server.js';


function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => ok(port));
    });
    s.on('error', fail);
  });
}

let server: ChildProcess;
let port: number;

before(async () => {
  port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'recsys-node-'));
  server = spawn(binary, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir, '--loadmodule', module_], { stdio: 'ignore' });
  await waitForServer(port);
});

after(() => {
  server.kill('SIGKILL');
});

// Numeric-looking ids: their order must survive RESP3 maps (a JS object
// would put '3' before '20').
const VECTORS: [string, number[]][] = [
  ['20', [0.1, 0.9, 0.0, 0.2]],
  ['3', [0.2, 0.8, 0.1, 0.1]],
  ['sku:3', [0.9, 0.1, 0.3, 0.0]],
  ['sku:4', [0.3, 0.7, 0.2, 0.1]],
];

for (const RESP of [2, 3] as const) {
  describe(`RESP${RESP}`, () => {
    test('items, search, events, recommendations, errors', async () => {
      const client = await createClient({ socket: { port }, RESP }).connect();
      try {
      await client.flushAll();
      const rs = new Recsys(client);
      await rs.create('shop', 4);
      const added = await rs.setItems('shop', VECTORS.map(([id, v], i) => ({
        id, vector: new Float32Array(v), attrs: i === 2 ? { price: 120 } : { price: 10 * (i + 1) },
      })));
      assert.equal(added, 4);
      const item = await rs.getItem('shop', '20');
      assert.ok(item && item.vector instanceof Float32Array && item.vector.length === 4);
      assert.deepEqual(item.attrs, { price: 10 });
      assert.equal(await rs.getItem('shop', 'missing'), null);
      assert.equal((await rs.info('shop')).items, 4);

      const found = await rs.search('shop', [0.1, 1, 0, 0.1], 2);
      assert.deepEqual(found.map((h) => h.id), ['20', '3']);
      assert.ok(found[0].score >= found[1].score && found[0].score <= 1.0001);
      assert.equal((await rs.similar('shop', '20', 1))[0].id, '3');

      assert.equal(await rs.event('shop', 'user:42', '20', { type: 'view' }), 1);
      const recs = await rs.recommend('shop', 'user:42', { k: 2, excludeSeen: true, where: 'price < 100' });
      assert.deepEqual(recs.ids, ['3', 'sku:4']);
      const explained = await rs.recommend('shop', 'user:42', { k: 2, explain: true });
      assert.equal(explained.hits.length, 2);
      assert.match(String(explained.explain?.user_vector), /^mean of/);
      await rs.setUser('user:7', new Float32Array([0.9, 0.1, 0.3, 0]), { age: 31 });
      assert.deepEqual((await rs.recommend('shop', 'user:7', { k: 1 })).ids, ['sku:3']);
      const others = await rs.recommend('shop', 'user:7', { k: 1, exclude: ['sku:3', 'nope'] });
      assert.ok(!others.ids.includes('sku:3'));
      assert.deepEqual((await rs.recommend('shop', 'user:7', { k: 2, minScore: 1.5 })).ids, []);
      const like = await rs.recommend('shop', '-', {
        k: 2, positive: [['sku:3', 2], 'nope'], negative: ['20'], strategy: 'BEST_SCORE', explain: true,
      });
      assert.ok(!like.ids.includes('sku:3') && !like.ids.includes('20'));
      assert.equal(like.explain?.examples_missing, 1);
      const mixed = await rs.recommend('shop', 'user:7', {
        k: 3, sources: [['user', 2], ['popular', 2]], merge: 'RRF', fallback: 'popular', withSource: true,
      });
      assert.equal(mixed.hits.length, 3);
      assert.ok(mixed.hits.every((h) => ['user', 'popular', 'fallback'].includes(String(h.source))));

      // An experiment: a stable variant per user, a request id to credit clicks with.
      await rs.setExperiment('shop', 'ab', { a: { weight: 1, options: 'K 1' }, b: { weight: 1, options: 'K 2' } });
      let clicked = 0;
      for (let u = 0; u < 40; u++) {
        const r = await rs.recommend('shop', `user:${u}`, { vector: [0.1, 1, 0, 0.1], experiment: 'ab' });
        assert.equal(r.ids.length, r.variant === 'a' ? 1 : 2);
        assert.match(String(r.requestId), /^ab:/);
        if (r.variant === 'b') {
          await rs.event('shop', `user:${u}`, r.ids[0], { type: 'click', request: r.requestId });
          clicked++;
        }
      }
      const report = await rs.experimentReport('shop', 'ab');
      assert.equal(report.control, 'a');
      assert.equal(report.variants[1].clicks, clicked);
      assert.equal(Number(report.variants[0].impressions) + Number(report.variants[1].impressions), 40);
      assert.equal(report.variants[1].ctr, 1);
      assert.equal(await rs.deleteExperiment('shop', 'ab'), 1);

      await assert.rejects(rs.search('shop', [1, 2, 3]), /DIM/);
      await assert.rejects(rs.recommend('shop', 'u', { k: Number.NaN }), /finite/);
      assert.equal(await rs.deleteItems('shop', 'sku:4', 'missing'), 1);

      // BATCH writes each user's list at `into{userkey}` and says which
      // slots it covered.
      for (let u = 0; u < 3; u++) await rs.setUser(`buser:${u}`, new Float32Array([0.9, 0.1, 0.3, 0.0]));
      const job = await rs.batch('shop', 'buser:*', 2, 'recs:');
      let status: Record<string, unknown> = {};
      for (let i = 0; i < 200; i++) {
        status = await rs.batchStatus(job);
        if (status.state !== 'running') break;
        await new Promise((ok) => setTimeout(ok, 50));
      }
      assert.equal(status.state, 'done');
      assert.equal(Number(status.written), 3);
      assert.equal(status.slots, '0-16383');
      assert.equal((await client.lRange('recs:{buser:0}', 0, -1))[0], 'sku:3');
      } finally {
        await client.close();
      }
    });
  });
}
