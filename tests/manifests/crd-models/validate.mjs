// Checks rendered custom resources against the maintained @kubernetes-models packages.
// stdin: a JSON array of Kubernetes objects. stdout: a JSON array, one entry per object,
// in order: {apiVersion, kind, name, model, at, errors}. `model` is null for a kind no
// package here models. Exit 0 whenever the input could be read (the caller judges).
//
// Two engines, because each misses what the other catches:
// - the model's validate() (ajv, compiled from the operators' Go types): types, required
//   fields, enums, patterns and formats; it ignores unknown fields;
// - the TypeScript compiler on the same packages' types, each object written as a typed
//   literal: its excess-property check rejects unknown (misspelled) fields at any depth.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const ARGO = "@kubernetes-models/argo-cd/argoproj.io/v1alpha1";
const CNPG = "@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1";
const ESO = "@kubernetes-models/external-secrets/external-secrets.io";
// Flux's image automation (v1) and notification (v1beta3) kinds: cloudcoil's Flux models
// for Python 3.11 stop at Flux 2.5 (image kinds at v1beta2, which Flux 2.7's CRDs no
// longer serve; no Provider.commitStatusExpr).
const FLUX = "@kubernetes-models/flux-cd";
// The plugin's ObjectStore has no model; its spec.configuration is barman-cloud's
// BarmanObjectStoreConfiguration, which the CloudNativePG package models.
const BARMAN = "@kubernetes-models/cloudnative-pg/github.com/cloudnative-pg/barman-cloud/pkg/api";

// "apiVersion kind" -> [module, class, path of the part checked ([] = the whole object)]
export const MODELS = {
  "argoproj.io/v1alpha1 Application": [`${ARGO}/Application`, "Application", []],
  "argoproj.io/v1alpha1 AppProject": [`${ARGO}/AppProject`, "AppProject", []],
  "postgresql.cnpg.io/v1 Cluster": [`${CNPG}/Cluster`, "Cluster", []],
  "postgresql.cnpg.io/v1 ScheduledBackup": [`${CNPG}/ScheduledBackup`, "ScheduledBackup", []],
  "postgresql.cnpg.io/v1 Backup": [`${CNPG}/Backup`, "Backup", []],
  "postgresql.cnpg.io/v1 Pooler": [`${CNPG}/Pooler`, "Pooler", []],
  "external-secrets.io/v1 ExternalSecret": [`${ESO}/v1/ExternalSecret`, "ExternalSecret", []],
  "external-secrets.io/v1 SecretStore": [`${ESO}/v1/SecretStore`, "SecretStore", []],
  "external-secrets.io/v1 ClusterSecretStore": [`${ESO}/v1/ClusterSecretStore`, "ClusterSecretStore", []],
  "external-secrets.io/v1 ClusterExternalSecret": [`${ESO}/v1/ClusterExternalSecret`, "ClusterExternalSecret", []],
  "image.toolkit.fluxcd.io/v1 ImageRepository": [`${FLUX}/image.toolkit.fluxcd.io/v1/ImageRepository`, "ImageRepository", []],
  "image.toolkit.fluxcd.io/v1 ImagePolicy": [`${FLUX}/image.toolkit.fluxcd.io/v1/ImagePolicy`, "ImagePolicy", []],
  "image.toolkit.fluxcd.io/v1 ImageUpdateAutomation": [`${FLUX}/image.toolkit.fluxcd.io/v1/ImageUpdateAutomation`, "ImageUpdateAutomation", []],
  "notification.toolkit.fluxcd.io/v1beta3 Provider": [`${FLUX}/notification.toolkit.fluxcd.io/v1beta3/Provider`, "Provider", []],
  "notification.toolkit.fluxcd.io/v1beta3 Alert": [`${FLUX}/notification.toolkit.fluxcd.io/v1beta3/Alert`, "Alert", []],
  "barmancloud.cnpg.io/v1 ObjectStore": [`${BARMAN}/BarmanObjectStoreConfiguration`, "BarmanObjectStoreConfiguration", ["spec", "configuration"]],
};

function modelErrors(Model, part) {
  try {
    new Model(part).validate();
    return [];
  } catch (err) {
    if (!Array.isArray(err.errors)) throw err;
    return err.errors.map((e) => `${e.instancePath || "/"}: ${e.message}`);
  }
}

// One .ts file with every object as a typed literal; tsc's diagnostics mapped back to the
// object by line. The file lives next to node_modules so the packages resolve.
function typeErrors(checked) {
  if (checked.length === 0) return new Map();
  const dir = mkdtempSync(join(HERE, ".check-"));
  try {
    const lines = [];
    const owner = [];
    checked.forEach(({ module, name }, n) => {
      lines.push(`import type { I${name} as T${n} } from "${module}";`);
      owner.push(null);
    });
    checked.forEach(({ index, part }, n) => {
      const body = `export const o${n}: T${n} = ${JSON.stringify(part, null, 1)};`.split("\n");
      lines.push(...body);
      owner.push(...body.map(() => index));
    });
    const file = join(dir, "objects.ts");
    writeFileSync(file, lines.join("\n") + "\n");
    let out = "";
    try {
      execFileSync(
        join(HERE, "node_modules", ".bin", "tsc"),
        ["--noEmit", "--strict", "--skipLibCheck", "--module", "nodenext", "--moduleResolution", "nodenext",
         "--target", "es2022", "--types", "", "--pretty", "false", file],
        { cwd: HERE, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
      );
    } catch (err) {
      out = `${err.stdout ?? ""}${err.stderr ?? ""}`;
      if (!out.includes("error TS")) throw err;
    }
    const errors = new Map();
    let last = null;
    for (const line of out.split("\n")) {
      const m = line.match(/objects\.ts\((\d+),\d+\): error (TS\d+: .*)$/);
      if (m) {
        last = owner[Number(m[1]) - 1];
        if (last === null || last === undefined) throw new Error(`tsc: ${line}`);
        errors.set(last, [...(errors.get(last) ?? []), `types: ${m[2]}`]);
      } else if (line.includes("error TS")) {
        throw new Error(`tsc: ${line}`); // not about an object: a broken setup, never a pass
      } else if (line.startsWith("  ") && last !== null) {
        // the elaboration of the previous diagnostic: appended to it
        const list = errors.get(last);
        list[list.length - 1] += ` | ${line.trim()}`;
      }
    }
    return errors;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
const checked = [];
for (const [index, obj] of objects.entries()) {
  const entry = MODELS[`${obj.apiVersion} ${obj.kind}`];
  const result = { apiVersion: obj.apiVersion, kind: obj.kind, name: obj.metadata?.name ?? null,
                   model: null, at: null, errors: [] };
  results.push(result);
  if (!entry) continue;
  const [module, name, path] = entry;
  const Model = (await import(module))[name];
  let part = obj;
  for (const key of path) part = part?.[key];
  result.model = `${module}#${name}`;
  result.at = path.length ? path.join(".") : null;
  if (part === undefined) {
    result.errors.push(`${path.join(".")}: missing`);
    continue;
  }
  result.errors.push(...modelErrors(Model, part));
  checked.push({ index, module, name, part });
}
for (const [index, errors] of typeErrors(checked)) results[index].errors.push(...errors);
process.stdout.write(JSON.stringify(results, null, 1) + "\n");
