// The client through node-redis's createCluster, on a real 3-master Redis
// Cluster with the module: a catalog and users with no hash tag, each user
// served on its own node from that node's copy of the catalog
// (docs/cluster.md). Needs redis-cli (to create the cluster).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, createCluster } from 'redis';
import { Recsys, routing } from '../src/index.js';
import { binary, module_, waitForServer } from './server.js';


/** A free port whose cluster bus port (+10000) is free too. */
async function clusterPort(): Promise<number> {
  const free = (p: number) =>
    new Promise<boolean>((ok) => {
      const s = createServer();
      s.once('error', () => ok(false));
      s.listen(p, '127.0.0.1', () => s.close(() => ok(true)));
    });
  for (;;) {
    const p = 20000 + Math.floor(Math.random() * 30000);
    if ((await free(p)) && (await free(p + 10000))) return p;
  }
}

const servers: ChildProcess[] = [];
const ports: number[] = [];

before(async () => {
  for (let i = 0; i < 3; i++) {
    const port = await clusterPort();
    const dir = mkdtempSync(join(tmpdir(), 'recsys-node-cluster-'));
    servers.push(spawn(binary, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir,
      '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--loadmodule', module_], { stdio: 'ignore' }));
    ports.push(port);
  }
  for (const p of ports) await waitForServer(p);
  execFileSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-yes'], { stdio: 'ignore' });
  const deadline = Date.now() + 30000;
  for (;;) {
    let ok = true;
    for (const port of ports) {
      const c = await createClient({ socket: { port } }).connect();
      ok &&= String(await c.sendCommand(['CLUSTER', 'INFO'])).includes('cluster_state:ok');
      await c.close();
    }
    if (ok) break;
    if (Date.now() > deadline) throw new Error('the cluster did not become ok');
    await new Promise((r) => setTimeout(r, 100));
  }
});

after(() => {
  for (const s of servers) s.kill('SIGKILL');
});

/** MOVED and ASK answers the nodes have given (INFO errorstats). */
async function redirections(): Promise<number> {
  let n = 0;
  for (const port of ports) {
    const c = await createClient({ socket: { port } }).connect();
    const info = String(await c.sendCommand(['INFO', 'errorstats']));
    await c.close();
    for (const m of info.matchAll(/errorstat_(?:MOVED|ASK):count=(\d+)/g)) n += Number(m[1]);
  }
  return n;
}

test('routing: RECOMMEND and EVENT by the user, writes by the catalog, plugins anywhere', () => {
  assert.deepEqual(routing(['RECSYS.RECOMMEND', 'shop', 'user:1', 'K', '5']), ['user:1', true]);
  assert.deepEqual(routing(['RECSYS.EVENT', 'shop', 'user:1', 'sku:1']), ['user:1', false]);
  assert.deepEqual(routing(['RECSYS.ITEM_SET', 'shop', 'sku:1']), ['shop', false]);
  assert.deepEqual(routing(['RECSYS.PLUGIN_LOAD', 'p', Buffer.from('x')]), [undefined, false]);
});

test('users on every node through createCluster', async () => {
  const cluster = createCluster({ rootNodes: ports.map((port) => ({ socket: { port } })) });
  cluster.on('error', () => {});
  await cluster.connect();
  try {
    const rs = new Recsys(cluster);
    await rs.create('shop', 4);
    const items = Array.from({ length: 60 }, (_, i) => ({
      id: `sku:${i}`,
      vector: new Float32Array([Math.cos(i), Math.sin(i), (i % 7) / 7, 1]),
      attrs: { price: i },
    }));
    assert.equal(await rs.setItems('shop', items), 60);
    const users = Array.from({ length: 300 }, (_, u) => `user:${u}`);
    for (const [u, user] of users.entries()) {
      await rs.setUser(user, new Float32Array([Math.sin(u), Math.cos(u), 0.5, 1]));
    }
    // Every master gets its copy within a second or so.
    const deadline = Date.now() + 30000;
    for (;;) {
      try {
        const all = await Promise.all(users.slice(0, 30).map((u) => rs.recommend('shop', u, { k: 3 })));
        if (all.every((r) => r.ids.length === 3)) break;
      } catch {
        // TRYAGAIN or not yet there.
      }
      if (Date.now() > deadline) throw new Error('copies did not reach every master');
      await new Promise((r) => setTimeout(r, 100));
    }
    const before_ = await redirections();
    let served = 0;
    for (const u of users) served += Number((await rs.recommend('shop', u, { k: 5, where: 'price < 50' })).ids.length === 5);
    assert.equal(served, users.length);
    assert.equal(await redirections(), before_, 'every request went to the user\'s node');
    const first = (await rs.recommend('shop', users[5], { k: 1 })).ids[0];
    await rs.event('shop', users[5], first);
    const after_ = await rs.recommend('shop', users[5], { k: 5, excludeSeen: true });
    assert.ok(!after_.ids.includes(first));
  } finally {
    await cluster.close();
  }
});
