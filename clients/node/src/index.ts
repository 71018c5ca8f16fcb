/**
 * Node.js client for the redis-recsys module, over node-redis (v5+).
 *
 *   import { createClient } from 'redis';
 *   import { Recsys } from 'redis-recsys';
 *   const client = await createClient({ RESP: 3 }).connect();
 *   const rs = new Recsys(client);
 *   await rs.create('shop', 4);
 *   await rs.setItem('shop', 'sku:1', new Float32Array([0.1, 0.9, 0, 0.2]), { price: 59 });
 *   const recs = await rs.recommend('shop', 'user:42', { k: 10, where: 'price < 100' });
 *
 * Vectors go out as FP32 blobs (Buffers), numbers as text (node-redis
 * refuses numbers as arguments), and replies are read the same in RESP2 and
 * RESP3 (maps are asked for as arrays so numeric item ids keep their order).
 */
import { RESP_TYPES } from 'redis';

/** What the helper needs of a node-redis client (`createClient`). */
export interface CommandSender {
  sendCommand(args: ReadonlyArray<string | Buffer>, options?: any): Promise<unknown>;
}

/**
 * What the helper needs of a node-redis cluster client (`createCluster`):
 * commands name the key that routes them.
 */
export interface ClusterCommandSender {
  sendCommand(
    firstKey: string | Buffer | undefined,
    isReadonly: boolean | undefined,
    args: ReadonlyArray<string | Buffer>,
    options?: any,
  ): Promise<unknown>;
  readonly masters: ReadonlyArray<unknown>;
}

/** Commands routed by the user key (argv 2) in a cluster: the catalog is a name there. */
const BY_USER = new Set(['RECSYS.RECOMMEND', 'RECSYS.EVENT']);
/** Commands with no key: any node (the module fans plugins out to every node). */
const KEYLESS = new Set(['RECSYS.PLUGIN_LOAD', 'RECSYS.PLUGIN_DEL', 'RECSYS.PLUGIN_LIST', 'RECSYS.BATCH_STATUS']);
const READONLY = new Set([
  'RECSYS.INFO', 'RECSYS.ITEM_GET', 'RECSYS.SEARCH', 'RECSYS.SIMILAR', 'RECSYS.RECOMMEND',
  'RECSYS.PLUGIN_LIST', 'RECSYS.BATCH_STATUS',
]);

/** The key a cluster client routes `args` by, and whether a replica may serve it. */
export function routing(args: ReadonlyArray<string | Buffer>): [string | Buffer | undefined, boolean] {
  const name = String(args[0]).toUpperCase();
  const key = KEYLESS.has(name) ? undefined : BY_USER.has(name) ? args[2] : args[1];
  return [key, READONLY.has(name)];
}

function isCluster(c: CommandSender | ClusterCommandSender): c is ClusterCommandSender {
  return 'masters' in c && Array.isArray((c as ClusterCommandSender).masters);
}

export type Vector = Float32Array | ArrayLike<number>;
export type Attrs = Record<string, unknown>;

/** An item id and its score. */
export interface Hit {
  id: string;
  score: number;
  /** With withSource: the source that found it (user, similar, popular, fallback). */
  source?: string;
}

/** An item as stored (unit vector in COSINE catalogs). */
export interface Item {
  id: string;
  vector: Float32Array;
  attrs: Attrs | null;
}

/** A plugin by name, or with its ARGS string. */
export type PluginRef = string | { name: string; args?: string };

export interface PipelineOptions {
  candidates?: number;
  ef?: number;
  where?: string;
  excludeSeen?: boolean;
  rank?: string;
  filters?: PluginRef[];
  order?: PluginRef;
  failOpen?: boolean;
  softmax?: { temperature: number; seed?: number };
  diversity?: { attribute: string; max: number };
  session?: { items: number; weight: number };
  /** Weight of the catalog's sequence model (0: off). */
  sequence?: number;
  /** Ids never returned. */
  exclude?: string[];
  /** Candidates scored below this are dropped. */
  minScore?: number;
  /** Items like these (ids, or [id, weight] pairs); never returned. */
  positive?: Example[];
  /** Items not like these. */
  negative?: Example[];
  strategy?: 'AVERAGE' | 'BEST_SCORE';
  /** Candidate sources and their shares, e.g. [['user', 150], ['popular', 20]]. */
  sources?: [string, number][];
  merge?: 'RRF' | 'SCORE';
  /** What fills K when the pipeline returns fewer. */
  fallback?: 'popular' | 'latest';
}

/** An example item: its id, or [id, weight]. */
export type Example = string | [string, number];

function exampleArgs(keyword: string, examples: Example[] | undefined): string[] {
  if (!examples || examples.length === 0) return [];
  const a = [keyword, num(examples.length)];
  for (const e of examples) {
    if (typeof e === 'string') a.push(e);
    else a.push(e[0], 'WEIGHT', num(e[1]));
  }
  return a;
}

export interface RecommendOptions extends PipelineOptions {
  k?: number;
  vector?: Vector;
  explain?: boolean;
  /** Each hit says which source found it. */
  withSource?: boolean;
  /** Serve with this experiment's variant for the user (see requestId, variant). */
  experiment?: string;
  /** Do not serve what the user's last n such requests served (recorded in the user hash). */
  noRepeat?: number;
}

export interface Recommendations {
  hits: Hit[];
  ids: string[];
  explain?: Record<string, unknown>;
  /** With an experiment: pass it to event() to credit clicks. */
  requestId?: string;
  /** With an experiment: the variant served. */
  variant?: string;
}

export interface CreateOptions {
  metric?: 'COSINE' | 'IP' | 'L2';
  m?: number;
  efConstruction?: number;
  efSearch?: number;
  quant?: 'F32' | 'Q8';
  session?: { items: number; weight: number };
}

export interface EventOptions {
  type?: string;
  weight?: number;
  ts?: number;
  /** The requestId of the recommendation this event answers (credits an experiment's variant). */
  request?: string;
}

/** One variant of an experiment: its share of users and its RECOMMEND options. */
export interface VariantSpec {
  weight: number;
  options?: string;
}

/** RECSYS.EXPERIMENT_REPORT: the experiment's fields, and one record per variant. */
export interface ExperimentReport {
  experiment: string;
  control: string;
  variants: Record<string, string | number>[];
  [field: string]: unknown;
}

const REPLY_TYPES = { [RESP_TYPES.MAP]: Array };

function num(x: number): string {
  if (typeof x !== 'number' || !Number.isFinite(x)) {
    throw new TypeError(`expected a finite number, got ${String(x)}`);
  }
  return String(x);
}

/** A vector as the FP32 little-endian blob the module reads. */
export function toBlob(v: Vector): Buffer {
  const f = v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number>);
  for (const x of f) {
    if (!Number.isFinite(x)) throw new RangeError('vector components must be finite');
  }
  return Buffer.from(f.buffer, f.byteOffset, f.byteLength);
}

function text(v: unknown): string {
  return Buffer.isBuffer(v) ? v.toString('utf8') : String(v);
}

/** A map reply (asked for as a flat array) or an object, as entries. */
function entries(v: unknown): [string, unknown][] {
  if (Array.isArray(v)) {
    const out: [string, unknown][] = [];
    for (let i = 0; i + 1 < v.length; i += 2) out.push([text(v[i]), v[i + 1]]);
    return out;
  }
  if (v instanceof Map) return [...v.entries()].map(([k, x]) => [text(k), x]);
  if (v && typeof v === 'object') return Object.entries(v);
  throw new Error(`expected a map reply, got ${String(v)}`);
}

function plain(v: unknown): unknown {
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  if (Array.isArray(v)) return v.map(plain);
  return v;
}

function record(v: unknown): Record<string, unknown> {
  return Object.fromEntries(entries(v).map(([k, x]) => [k, Array.isArray(x) ? plain(x) : plain(x)]));
}

function hits(v: unknown): Hit[] {
  return entries(v).map(([id, s]) => {
    if (Array.isArray(s)) return { id, score: Number(text(s[0])), source: String(text(s[1])) };
    return { id, score: Number(text(s)) };
  });
}

function pluginArgs(keyword: string, p: PluginRef): string[] {
  const { name, args } = typeof p === 'string' ? { name: p, args: undefined } : p;
  return args === undefined ? [keyword, name] : [keyword, name, 'ARGS', args];
}

function pipelineArgs(o: PipelineOptions): string[] {
  const a: string[] = [];
  if (o.candidates !== undefined) a.push('CANDIDATES', num(o.candidates));
  if (o.ef !== undefined) a.push('EF', num(o.ef));
  if (o.where !== undefined) a.push('WHERE', o.where);
  if (o.excludeSeen) a.push('EXCLUDE_SEEN');
  if (o.rank !== undefined) a.push('RANK', o.rank);
  for (const f of o.filters ?? []) a.push(...pluginArgs('FILTER', f));
  if (o.order !== undefined) a.push(...pluginArgs('ORDER', o.order));
  if (o.failOpen) a.push('FAILOPEN');
  if (o.softmax) {
    a.push('SOFTMAX', num(o.softmax.temperature));
    if (o.softmax.seed !== undefined) a.push('SEED', num(o.softmax.seed));
  }
  if (o.diversity) a.push('DIVERSITY', o.diversity.attribute, num(o.diversity.max));
  if (o.session) a.push('SESSION', num(o.session.items), num(o.session.weight));
  if (o.sequence !== undefined) a.push('SEQUENCE', num(o.sequence));
  if (o.exclude && o.exclude.length > 0) a.push('EXCLUDE', num(o.exclude.length), ...o.exclude);
  if (o.minScore !== undefined) a.push('MIN_SCORE', num(o.minScore));
  a.push(...exampleArgs('POSITIVE', o.positive), ...exampleArgs('NEGATIVE', o.negative));
  if (o.strategy !== undefined) a.push('STRATEGY', o.strategy);
  if (o.sources && o.sources.length > 0) {
    a.push('SOURCES', num(o.sources.length));
    for (const [name, share] of o.sources) a.push(name, num(share));
  }
  if (o.merge !== undefined) a.push('MERGE', o.merge);
  if (o.fallback !== undefined) a.push('FALLBACK', o.fallback);
  return a;
}

/** The RECSYS.* commands as typed methods over a node-redis client. */
export class Recsys {
  /** A node-redis client, or a cluster client (RECOMMEND and EVENT then go to the user's node). */
  constructor(readonly client: CommandSender | ClusterCommandSender) {}

  private send(args: (string | Buffer)[]): Promise<unknown> {
    const options = { typeMapping: REPLY_TYPES };
    if (isCluster(this.client)) {
      const [key, readonly] = routing(args);
      return this.client.sendCommand(key, readonly, args, options);
    }
    return this.client.sendCommand(args, options);
  }

  /** RECSYS.CREATE: a catalog of `dim`-dimensional vectors. */
  async create(key: string, dim: number, o: CreateOptions = {}): Promise<void> {
    const a = ['RECSYS.CREATE', key, 'DIM', num(dim), 'METRIC', o.metric ?? 'COSINE'];
    if (o.m !== undefined) a.push('M', num(o.m));
    if (o.efConstruction !== undefined) a.push('EF_CONSTRUCTION', num(o.efConstruction));
    if (o.efSearch !== undefined) a.push('EF_SEARCH', num(o.efSearch));
    if (o.quant !== undefined) a.push('QUANT', o.quant);
    if (o.session) a.push('SESSION', num(o.session.items), num(o.session.weight));
    await this.send(a);
  }

  /** RECSYS.INFO as an object. */
  async info(key: string): Promise<Record<string, unknown>> {
    return record(await this.send(['RECSYS.INFO', key]));
  }

  /** RECSYS.ITEM_SET; true when the item is new. */
  async setItem(key: string, id: string, vector: Vector, attrs?: Attrs): Promise<boolean> {
    const a: (string | Buffer)[] = ['RECSYS.ITEM_SET', key, id, 'FP32', toBlob(vector)];
    if (attrs !== undefined) a.push('ATTRS', JSON.stringify(attrs));
    return Number(await this.send(a)) === 1;
  }

  /** RECSYS.ITEM_MSET: all items or none; returns how many were new. */
  async setItems(key: string, items: { id: string; vector: Vector; attrs?: Attrs }[]): Promise<number> {
    const withAttrs = items.some((i) => i.attrs !== undefined);
    const a: (string | Buffer)[] = ['RECSYS.ITEM_MSET', key];
    if (withAttrs) a.push('WITHATTRS');
    for (const i of items) {
      a.push(i.id, toBlob(i.vector));
      if (withAttrs) a.push(JSON.stringify(i.attrs ?? {}));
    }
    return Number(await this.send(a));
  }

  /** RECSYS.ITEM_GET, or null when the item does not exist. */
  async getItem(key: string, id: string): Promise<Item | null> {
    const r = await this.send(['RECSYS.ITEM_GET', key, id]);
    if (r === null || r === undefined) return null;
    const m = new Map(entries(r));
    const vector = Float32Array.from((m.get('vector') as unknown[]).map((x) => Number(text(x))));
    const attrs = m.get('attrs');
    return { id, vector, attrs: attrs === null || attrs === undefined ? null : JSON.parse(text(attrs)) };
  }

  /** RECSYS.ITEM_DEL; returns how many existed. */
  async deleteItems(key: string, ...ids: string[]): Promise<number> {
    return Number(await this.send(['RECSYS.ITEM_DEL', key, ...ids]));
  }

  /** RECSYS.SEARCH: the `k` nearest items, with scores. */
  async search(key: string, vector: Vector, k = 10, ef?: number): Promise<Hit[]> {
    const a: (string | Buffer)[] = ['RECSYS.SEARCH', key, num(k), 'FP32', toBlob(vector)];
    if (ef !== undefined) a.push('EF', num(ef));
    return hits(await this.send([...a, 'WITHSCORES']));
  }

  /** RECSYS.SIMILAR: items nearest to an item, with scores. */
  async similar(key: string, id: string, k = 10, ef?: number): Promise<Hit[]> {
    const a = ['RECSYS.SIMILAR', key, id, num(k)];
    if (ef !== undefined) a.push('EF', num(ef));
    return hits(await this.send([...a, 'WITHSCORES']));
  }

  /** HSET of a user hash: `emb` as an FP32 blob, other fields as text. */
  async setUser(user: string, embedding?: Vector, fields: Record<string, string | number> = {}): Promise<number> {
    const a: (string | Buffer)[] = ['HSET', user];
    for (const [k, v] of Object.entries(fields)) a.push(k, typeof v === 'number' ? num(v) : v);
    if (embedding !== undefined) a.push('emb', toBlob(embedding));
    if (a.length === 2) throw new RangeError('nothing to set');
    return Number(await this.send(a));
  }

  /** RECSYS.EVENT: records an interaction; returns the user's recent-item count. */
  async event(catalog: string, user: string, id: string, o: EventOptions = {}): Promise<number> {
    const a = ['RECSYS.EVENT', catalog, user, id];
    if (o.type !== undefined) a.push('TYPE', o.type);
    if (o.weight !== undefined) a.push('WEIGHT', num(o.weight));
    if (o.ts !== undefined) a.push('TS', num(o.ts));
    if (o.request !== undefined) a.push('REQUEST', o.request);
    return Number(await this.send(a));
  }

  /** RECSYS.RECOMMEND: user vector, retrieval, filters, ranking, ordering. */
  async recommend(catalog: string, user: string, o: RecommendOptions = {}): Promise<Recommendations> {
    const a: (string | Buffer)[] = ['RECSYS.RECOMMEND', catalog, user, 'K', num(o.k ?? 10)];
    if (o.vector !== undefined) a.push('VECTOR', toBlob(o.vector));
    a.push(...pipelineArgs(o), 'WITHSCORES');
    if (o.withSource) a.push('WITHSOURCE');
    if (o.explain) a.push('EXPLAIN');
    if (o.experiment !== undefined) a.push('EXPERIMENT', o.experiment);
    if (o.noRepeat !== undefined) a.push('NOREPEAT', num(o.noRepeat));
    const r = await this.send(a);
    if (o.explain || o.experiment !== undefined) {
      const m = new Map(entries(r));
      const h = hits(m.get('items'));
      const out: Recommendations = { hits: h, ids: h.map((x) => x.id) };
      if (o.explain) out.explain = record(m.get('explain'));
      if (o.experiment !== undefined) {
        out.requestId = text(m.get('request'));
        out.variant = text(m.get('variant'));
      }
      return out;
    }
    const h = hits(r);
    return { hits: h, ids: h.map((x) => x.id) };
  }

  /** RECSYS.EXPERIMENT_SET: variants by name (the first is the control); replaces an experiment and its counts. */
  async setExperiment(catalog: string, name: string, variants: Record<string, VariantSpec>): Promise<void> {
    const a = ['RECSYS.EXPERIMENT_SET', catalog, name];
    for (const [v, spec] of Object.entries(variants)) {
      a.push('VARIANT', v, 'WEIGHT', num(spec.weight), 'OPTIONS', spec.options ?? '');
    }
    await this.send(a);
  }

  /** RECSYS.EXPERIMENT_REPORT: per variant users, impressions, clicks, CTR with its 95% interval, lift and significance. */
  async experimentReport(catalog: string, name: string): Promise<ExperimentReport> {
    const m = new Map(entries(await this.send(['RECSYS.EXPERIMENT_REPORT', catalog, name])));
    const scalar = (k: string, x: unknown): string | number =>
      ['experiment', 'control', 'name', 'options'].includes(k) ? text(x) : Number(text(x));
    const out: Record<string, unknown> = {};
    for (const [k, x] of m) if (k !== 'variants') out[k] = scalar(k, x);
    out.variants = (m.get('variants') as unknown[]).map((v) =>
      Object.fromEntries(entries(v).map(([k, x]) => [k, scalar(k, x)])),
    );
    return out as ExperimentReport;
  }

  /** RECSYS.EXPERIMENT_DEL: 1 when it existed. */
  async deleteExperiment(catalog: string, name: string): Promise<number> {
    return Number(await this.send(['RECSYS.EXPERIMENT_DEL', catalog, name]));
  }

  /** RECSYS.BATCH: recommendations for every matching user into lists at
   * `into{userkey}`; returns the job id (batchStatus has the slots it covers). */
  async batch(catalog: string, match: string, k: number, into: string, o: PipelineOptions & { ttl?: number } = {}): Promise<number> {
    const a = ['RECSYS.BATCH', catalog, 'MATCH', match, 'K', num(k), 'INTO', into];
    if (o.ttl !== undefined) a.push('TTL', num(o.ttl));
    return Number(record(await this.send([...a, ...pipelineArgs(o)])).id);
  }

  /** RECSYS.BATCH_STATUS of one job. */
  async batchStatus(id: number): Promise<Record<string, unknown>> {
    return record(await this.send(['RECSYS.BATCH_STATUS', num(id)]));
  }

  /** RECSYS.PLUGIN_LOAD of a WebAssembly component. */
  async loadPlugin(name: string, component: Buffer, replace = false): Promise<void> {
    await this.send(['RECSYS.PLUGIN_LOAD', name, component, ...(replace ? ['REPLACE'] : [])]);
  }

  /** RECSYS.MODEL_SET: an ONNX or DLRM model with its feature schema. */
  async setModel(catalog: string, name: string, kind: 'ONNX' | 'DLRM', model: Buffer, schema: string | string[], role: 'RANK' | 'QUERY' = 'RANK'): Promise<void> {
    const tokens = typeof schema === 'string' ? schema.split(/\s+/).filter(Boolean) : schema;
    await this.send(['RECSYS.MODEL_SET', catalog, name, kind, model, 'ROLE', role, 'SCHEMA', ...tokens]);
  }
}
