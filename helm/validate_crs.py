#!/usr/bin/env python3
"""Validate the custom resources of rendered manifests against their CRDs' schemas (helm/check).

    validate_crs.py --crds DIR --kube-version X.Y [--kinds "K1 K2"] [--label NAME] FILE...

DIR holds CustomResourceDefinition YAML files (and a SOURCES file: `file module@version path`,
written by `dev/install helm`). Every object of FILE whose group and kind a CRD of DIR defines is
validated against the `openAPIV3Schema` of the CRD version its apiVersion names, which must be
served. The schema is OpenAPI v3 (the structural schema subset Kubernetes accepts); it is turned
into JSON Schema (draft 4, whose boolean exclusiveMinimum/Maximum OpenAPI v3.0 shares) for the
`jsonschema` validator:
  * `nullable: true` allows null; `x-kubernetes-int-or-string` an integer or a string;
    `x-kubernetes-list-type: set` items unique, `map` items unique by their
    `x-kubernetes-list-map-keys`; `x-kubernetes-embedded-resource` needs apiVersion and kind;
  * unknown fields: an object schema that declares `properties` and has neither
    `additionalProperties` nor `x-kubernetes-preserve-unknown-fields` refuses any other field.
    That is stricter than the API server, which prunes such a field from a structural schema
    (Helm gets at most a warning): for a chart a misspelt field that silently disappears is a
    bug, so it fails here;
  * metadata (`type: object` in every CRD) is checked against Kubernetes' own ObjectMeta schema,
    strict, of --kube-version (kubernetes-validate's, on a ConfigMap that carries it);
  * `format` and CEL rules (`x-kubernetes-validations`) are not checked; the summary says how
    many CEL rules the CRDs used hold, if any.
Every object of a kind in --kinds without a CRD in DIR is reported as not validated.

Prints one summary line on stdout. Every problem goes to stderr as
`FILE: KIND NAME: JSON.PATH: problem` (FILE: --label if given); then exits 1.
"""
import argparse
import copy
import os
import sys
from collections import Counter

import jsonschema
import kubernetes_validate
import yaml


def to_json_schema(node, structural=True):
    """OpenAPI v3 structural schema -> JSON Schema draft 4 (see the module doc). `structural` is
    False inside allOf/anyOf/oneOf/not, whose branches only add value validations."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: to_json_schema(v, structural) for k, v in value.items()}
        elif key == "items":
            out[key] = to_json_schema(value, structural)
        elif key == "additionalProperties" and isinstance(value, dict):
            out[key] = to_json_schema(value, structural)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(v, False) for v in value]
        elif key == "not":
            out[key] = to_json_schema(value, False)
        elif key.startswith("x-kubernetes-") or key in ("nullable", "description", "default", "example", "format"):
            continue
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        if "anyOf" not in out:
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"] + ["null"]
        if "enum" in out:
            out["enum"] = out["enum"] + [None]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if node.get("x-kubernetes-embedded-resource"):
        out["required"] = sorted(set(out.get("required", [])) | {"apiVersion", "kind"})
    if (structural and "properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def list_map_problems(schema, value, path):
    """x-kubernetes-list-type: map: no two items with the same x-kubernetes-list-map-keys."""
    if not isinstance(schema, dict):
        return
    if schema.get("x-kubernetes-list-type") == "map" and isinstance(value, list):
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = {}
        for i, item in enumerate(value):
            if isinstance(item, dict):
                k = tuple(item.get(key) for key in keys)
                if k in seen:
                    yield path + [i], f"duplicate item for the list's keys {dict(zip(keys, k))} (also at [{seen[k]}])"
                seen.setdefault(k, i)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k, extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield from list_map_problems(sub, v, path + [k])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            yield from list_map_problems(schema["items"], v, path + [i])


def count_cel(node):
    if isinstance(node, dict):
        return len(node.get("x-kubernetes-validations", [])) + sum(count_cel(v) for v in node.values())
    if isinstance(node, list):
        return sum(count_cel(v) for v in node)
    return 0


def json_path(parts):
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(the object)"


def describe(error, schema_name="the CRD"):
    if error.validator == "additionalProperties" and error.validator_value is False:
        declared = set(error.schema.get("properties", {}))
        for extra in sorted(k for k in error.instance if k not in declared):
            yield list(error.absolute_path) + [extra], f"unknown field: {schema_name} does not declare it (the API server would drop it)"
    elif error.validator in ("anyOf", "oneOf") and error.context:
        reasons = sorted({e.message for e in error.context})
        yield list(error.absolute_path), f"{error.message}: " + "; ".join(reasons)
    else:
        yield list(error.absolute_path), error.message


def load_crds(directory):
    crds, sources = {}, {}
    sources_file = os.path.join(directory, "SOURCES")
    if os.path.exists(sources_file):
        for line in open(sources_file, encoding="utf-8"):
            parts = line.split()
            if len(parts) >= 2:
                sources[parts[0]] = parts[1]
    for name in sorted(os.listdir(directory)):
        if not name.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(open(os.path.join(directory, name), encoding="utf-8")):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            crds[(spec["group"], spec["names"]["kind"])] = {
                "versions": {v["name"]: v for v in spec["versions"]},
                "source": sources.get(name, name),
            }
    return crds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crds", required=True)
    ap.add_argument("--kube-version", required=True)
    ap.add_argument("--kinds", default="", help="custom resource kinds expected (reported when no CRD)")
    ap.add_argument("--label", help="the name to report the file(s) by")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    crds = load_crds(args.crds)
    if not crds:
        sys.exit(f"validate_crs.py: no CustomResourceDefinition in {args.crds}")
    validators = {}  # (group, kind, version) -> (validator, raw schema)
    validated, unvalidated, used = Counter(), Counter(), {}
    problems = []
    for file in args.files:
        for obj in yaml.safe_load_all(open(file, encoding="utf-8")):
            if not isinstance(obj, dict):
                continue
            api_version, kind = str(obj.get("apiVersion", "")), obj.get("kind")
            group, _, version = api_version.rpartition("/")
            name = (obj.get("metadata") or {}).get("name", "?")
            crd = crds.get((group, kind))

            def problem(parts, message):
                problems.append(f"{args.label or file}: {kind} {name}: {json_path(parts)}: {message}")

            if crd is None:
                groups = sorted(g for g, k in crds if k == kind)
                if groups:
                    problem(["apiVersion"], f"{api_version}: the CRDs define {kind} in group {', '.join(groups)} only")
                elif kind in args.kinds.split():
                    unvalidated[kind] += 1
                continue

            served = sorted(v for v, d in crd["versions"].items() if d.get("served"))
            if version not in served:
                problem(["apiVersion"], f"{api_version}: the CRD ({crd['source']}) serves {group}/{', '.join(served)} only")
                continue
            key = (group, kind, version)
            if key not in validators:
                raw = crd["versions"][version]["schema"]["openAPIV3Schema"]
                schema = to_json_schema(raw)
                jsonschema.Draft4Validator.check_schema(schema)
                validators[key] = (jsonschema.Draft4Validator(schema), raw)
                used[f"{kind} {group}/{version}"] = (crd["source"], count_cel(raw))
            validator, raw = validators[key]
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
                for parts, message in describe(error):
                    problem(parts, message)
            for parts, message in list_map_problems(raw, obj, []):
                problem(parts, message)
            if isinstance(obj.get("metadata"), dict):
                wrapper = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
                try:
                    kubernetes_validate.validate(wrapper, args.kube_version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    for parts, message in describe(e, f"Kubernetes {args.kube_version}'s ObjectMeta"):
                        problem(parts, message)
            else:
                problem(["metadata"], "missing or not an object")
            validated[f"{kind} {group}/{version}"] += 1

    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"{len(problems)} problem(s) in custom resources (above)", file=sys.stderr)
        sys.exit(1)
    parts = []
    if validated:
        parts.append(f"{sum(validated.values())} custom resources validated against their CRDs ("
                     + ", ".join(f"{k} x{n}" for k, n in sorted(validated.items())) + ")")
    cel = sum(c for _, c in used.values())
    if cel:
        parts.append(f"{cel} CEL rules of those CRDs not evaluated")
    if unvalidated:
        parts.append("not validated, no CRD from a package registry: "
                     + ", ".join(f"{k} x{n}" for k, n in sorted(unvalidated.items())))
    print("; ".join(parts) if parts else "no custom resources")


if __name__ == "__main__":
    main()
