// A Node.js client of flint: @grpc/grpc-js and @grpc/proto-loader (from npm) load
// proto/flint/v1/flint.proto at run time, the way an application in another language would.
//
// usage: node client.mjs PROTO_DIR GRPC_ADDR HTTP_ADDR ENDPOINT
// Prints one JSON object with what it saw; the Python side (test_node.py) asserts on it, so this
// script only reports and never decides.
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import path from 'node:path';

const [protoDir, grpcAddr, httpAddr, endpoint] = process.argv.slice(2);
const opts = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [protoDir] };
const flintPkg = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(protoDir, 'flint/v1/flint.proto'), opts));
const healthPkg = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(protoDir, 'grpc/health/v1/health.proto'), opts));
const creds = grpc.credentials.createInsecure();
const flint = new flintPkg.flint.v1.Flint(grpcAddr, creds);
const health = new healthPkg.grpc.health.v1.Health(grpcAddr, creds);

const unary = (client, method, req) =>
  new Promise((resolve) => {
    client[method](req, { deadline: Date.now() + 20000 }, (err, resp) =>
      resolve(err ? { code: grpc.status[err.code], details: err.details } : { ok: resp }));
  });

const stream = (req) =>
  new Promise((resolve) => {
    const chunks = [];
    const call = flint.InvokeStream(req, { deadline: Date.now() + 20000 });
    call.on('data', (c) => chunks.push(Buffer.from(c.data).toString()));
    call.on('error', (err) => resolve({ code: grpc.status[err.code], details: err.details, chunks }));
    call.on('end', () => resolve({ chunks }));
  });

const out = {};
const hc = await unary(health, 'Check', {});
out.health = hc.ok ? hc.ok.status : hc;
const inv = await unary(flint, 'Invoke', { endpoint, payload: Buffer.from('hello from node') });
out.invoke = inv.ok ? { payload: Buffer.from(inv.ok.payload).toString(), version: inv.ok.version, replica: inv.ok.replica } : inv;
out.stream = await stream({ endpoint, payload: Buffer.from('streamed from node') });
const missing = await unary(flint, 'Invoke', { endpoint: 'no-such-endpoint', payload: Buffer.from('x') });
out.missing = missing;
const list = await unary(flint, 'ListEndpoints', {});
out.endpoints = list.ok ? list.ok.endpoints.map((e) => e.name) : list;
const get = await unary(flint, 'GetEndpoint', { name: endpoint });
out.get = get.ok ? { name: get.ok.name, version: get.ok.version, kind: get.ok.kind, state: get.ok.state } : get;
const resp = await fetch(`http://${httpAddr}/v1/endpoints/${endpoint}:invoke`, { method: 'POST', body: 'over http from node' });
out.http = { status: resp.status, body: await resp.text() };
console.log(JSON.stringify(out));
flint.close();
health.close();
