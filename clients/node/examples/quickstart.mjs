// Copy me: a catalog, a user, recommendations. Needs a Redis with the module:
//   redis-server --loadmodule target/release/librecsys.so
//   npm run build && node examples/quickstart.mjs [port]
import { createClient } from 'redis';
import { Recsys } from '../dist/index.js';

const port = Number(process.argv[2] ?? 6379);
const client = await createClient({ socket: { port }, RESP: 3 }).connect();
const rs = new Recsys(client);

await client.del('demo:items');
await rs.create('demo:items', 16);
const items = Array.from({ length: 1000 }, (_, i) => ({
  id: `item:${i}`,
  vector: Float32Array.from({ length: 16 }, (_, j) => Math.sin(i * 7 + j * 3)),
  attrs: { price: (i * 37) % 200 },
}));
await rs.setItems('demo:items', items);
for (const id of ['item:1', 'item:2', 'item:3']) {
  await rs.event('demo:items', 'demo:user:1', id, { type: 'view' });
}
const recs = await rs.recommend('demo:items', 'demo:user:1', { k: 5, excludeSeen: true, where: 'price < 50' });
for (const hit of recs.hits) {
  const item = await rs.getItem('demo:items', hit.id);
  console.log(`${hit.id}\t${hit.score.toFixed(3)}\t${JSON.stringify(item?.attrs)}`);
}
await client.close();
