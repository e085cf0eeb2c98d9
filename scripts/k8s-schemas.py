#!/usr/bin/env python3
"""Generate the JSON schemas that validate deploy/kubernetes offline (kubeconform, in CI).

    scripts/k8s-schemas.py SWAGGER_JSON SERVICEMONITOR_CRD_JSON OUT_DIR

SWAGGER_JSON is Kubernetes' own OpenAPI v2 document (api/openapi-spec/swagger.json of the
k8s.io/kubernetes module, from the Go module proxy: `go mod download -json k8s.io/kubernetes@v1.31.4`);
SERVICEMONITOR_CRD_JSON is the Prometheus Operator's CRD (jsonnet/prometheus-operator/
servicemonitors-crd.json of github.com/prometheus-operator/prometheus-operator@v0.79.2). There is no
GitHub download here, so the usual kubernetes-json-schema repository cannot be fetched; this
writes the same kind of file ("standalone-strict": every referenced definition included, unknown
fields refused) for only the kinds deploy/kubernetes uses, named as kubeconform looks them up
(`{kind}{-group}-{version}.json`). Run it again when a manifest uses a new kind.
"""
import json
import os
import sys

KINDS = {
    # kubeconform file name: swagger definition
    "namespace-v1": "io.k8s.api.core.v1.Namespace",
    "configmap-v1": "io.k8s.api.core.v1.ConfigMap",
    "secret-v1": "io.k8s.api.core.v1.Secret",
    "service-v1": "io.k8s.api.core.v1.Service",
    "daemonset-apps-v1": "io.k8s.api.apps.v1.DaemonSet",
    "poddisruptionbudget-policy-v1": "io.k8s.api.policy.v1.PodDisruptionBudget",
}


def strict(node):
    """Refuse unknown fields; accept int-or-string as either; drop vendor extensions."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k.startswith("x-kubernetes-") or k == "description":
            continue
        out[k] = strict(v)
    if out.get("format") == "int-or-string":
        out.pop("type", None)
        out.pop("format", None)
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def refs(node, found):
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and r.startswith("#/definitions/"):
            found.add(r[len("#/definitions/"):])
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)


def closure(defs, root):
    todo, seen = [root], set()
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        found = set()
        refs(defs[d], found)
        todo.extend(found - seen)
    return seen


def main():
    swagger, crd_path, out_dir = sys.argv[1:4]
    defs = json.load(open(swagger))["definitions"]
    os.makedirs(out_dir, exist_ok=True)
    for name, root in KINDS.items():
        needed = closure(defs, root)
        schema = {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "$ref": "#/definitions/" + root,
            "definitions": {d: strict(defs[d]) for d in sorted(needed)},
        }
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump(schema, f, indent=1, sort_keys=True)
            f.write("\n")
    crd = json.load(open(crd_path))
    for v in crd["spec"]["versions"]:
        schema = strict(v["schema"]["openAPIV3Schema"])
        name = "%s-%s-%s" % (crd["spec"]["names"]["kind"].lower(), crd["spec"]["group"].split(".")[0], v["name"])
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            json.dump(schema, f, indent=1, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
