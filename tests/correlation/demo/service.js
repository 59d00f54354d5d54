// One service of kspan's correlation demo, instrumented with the official
// OpenTelemetry SDK for Node.js (sdk-node + http instrumentation).
//
//   ROLE=backend  PORT=p                      GET /work   -> 200 after a child span
//   ROLE=frontend PORT=p BACKEND=http://h:p   GET /order  -> calls the backend twice
//
// HOST is the address to listen on (default 127.0.0.1; 0.0.0.0 in a
// container, where the host and the other service reach it over a bridge).
// The service name is OTEL_SERVICE_NAME when set, else kspan-demo-<role>.
//
// Spans go, over OTLP/HTTP (protobuf), to kspan's receiver and, unchanged,
// to a reference collector (REFERENCE_OTLP_URL) so a test can compare what
// kspan forwarded with what the SDK produced; to either alone when only one
// is set. kspan's receiver is KSPAN_OTLP_URL, or, when that is unset, where
// the standard variables say (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
// OTEL_EXPORTER_OTLP_ENDPOINT), read by the SDK's exporter itself as in any
// instrumented app. The batch processor exports every EXPORT_DELAY_MS;
// unset, every 200 ms with KSPAN_OTLP_URL and at the SDK's default
// otherwise (OTEL_BSP_SCHEDULE_DELAY, 5 s), and always at shutdown.
'use strict';

const { NodeSDK, tracing } = require('@opentelemetry/sdk-node');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');

const role = process.env.ROLE;
const port = Number(process.env.PORT || 0);
const host = process.env.HOST || '127.0.0.1';
const standardEndpoint =
  !process.env.KSPAN_OTLP_URL &&
  Boolean(process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || process.env.OTEL_EXPORTER_OTLP_ENDPOINT);
const delay = process.env.EXPORT_DELAY_MS
  ? Number(process.env.EXPORT_DELAY_MS)
  : standardEndpoint
    ? undefined
    : 200;

// `url` undefined: the exporter's endpoint from the OTEL_ variables.
function processor(url) {
  return new tracing.BatchSpanProcessor(
    new OTLPTraceExporter(url ? { url } : {}),
    delay === undefined ? {} : { scheduledDelayMillis: delay },
  );
}

const sdk = new NodeSDK({
  // Set explicitly, the SDK would prefer it to OTEL_SERVICE_NAME.
  serviceName: process.env.OTEL_SERVICE_NAME || `kspan-demo-${role}`,
  // Only to the receivers named: a test without kspan (the container
  // plumbing test) sets REFERENCE_OTLP_URL alone.
  spanProcessors: [
    ...(process.env.KSPAN_OTLP_URL ? [process.env.KSPAN_OTLP_URL] : []),
    ...(standardEndpoint ? [undefined] : []),
    ...(process.env.REFERENCE_OTLP_URL ? [process.env.REFERENCE_OTLP_URL] : []),
  ].map(processor),
  instrumentations: [new HttpInstrumentation()],
});
sdk.start();

// Loaded after the SDK so the instrumentation patches them.
const http = require('http');
const api = require('@opentelemetry/api');
const tracer = api.trace.getTracer('kspan-demo', '1.0.0');

// A new connection per call: each request's trace then holds a TCP connect.
const agent = new http.Agent({ keepAlive: false });

function get(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      })
      .on('error', reject);
  });
}

function backend(req, res) {
  if (!req.url.startsWith('/work')) {
    res.writeHead(404).end();
    return;
  }
  tracer.startActiveSpan('compute', { attributes: { 'demo.items': 3 } }, (span) => {
    setTimeout(() => {
      span.addEvent('computed', { 'demo.result': 42 });
      span.end();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ result: 42 }));
    }, 5);
  });
}

async function frontend(req, res) {
  if (!req.url.startsWith('/order')) {
    res.writeHead(404).end();
    return;
  }
  try {
    const a = await get(`${process.env.BACKEND}/work?step=1`);
    const b = await get(`${process.env.BACKEND}/work?step=2`);
    res.writeHead(a.status === 200 && b.status === 200 ? 200 : 502, {
      'content-type': 'text/plain',
    });
    res.end(`ok ${a.body} ${b.body}\n`);
  } catch (e) {
    res.writeHead(502).end(String(e));
  }
}

const server = http.createServer(role === 'backend' ? backend : frontend);
server.listen(port, host, () => {
  console.log(`listening ${server.address().port} pid ${process.pid}`);
});

function stop() {
  server.close();
  sdk.shutdown().finally(() => process.exit(0));
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
