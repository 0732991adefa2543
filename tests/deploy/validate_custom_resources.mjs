// Validates custom resources (ServiceMonitor, PrometheusRule, HTTPRoute) against the schemas of
// their operators' CRDs, as published by kubernetes-models: types, patterns, enums and required
// fields (not unknown fields: those schemas allow them).
//   node validate_custom_resources.mjs MODELS_DIR < resources.json
// MODELS_DIR holds node_modules/@kubernetes-models/…; stdin is a JSON array of resources.
// Prints one JSON line per resource: {"kind", "name", "error"} (error null when valid); exits 1
// when any is invalid or has no known schema.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const PACKAGES = {
  "monitoring.coreos.com": "prometheus-operator",
  "gateway.networking.k8s.io": "gateway-api",
};

const modelsDir = process.argv[2];
const resources = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const resource of resources) {
  const [group, version] = resource.apiVersion.split("/");
  const name = resource.metadata?.name ?? null;
  let error = null;
  const pkg = PACKAGES[group];
  if (!pkg) {
    error = `no schema for ${resource.apiVersion}`;
  } else {
    const file = join(modelsDir, "node_modules", "@kubernetes-models", pkg, group, version, `${resource.kind}.js`);
    try {
      const module = await import(pathToFileURL(file).href);
      new module[resource.kind](resource).validate();
    } catch (caught) {
      error = String(caught.message ?? caught);
    }
  }
  failed ||= error !== null;
  console.log(JSON.stringify({ kind: resource.kind, name, error }));
}
process.exit(failed ? 1 : 0);
