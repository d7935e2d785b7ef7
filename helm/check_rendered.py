#!/usr/bin/env python3
"""helm/check_rendered.py TOPOLOGY RENDERED.yaml [--all-processors] [--also=PROCESSOR,...]

Checks of `helm template` output that a Kubernetes schema cannot make, run by helm/check:

  * every processor of topology.yaml that is not `optional: true` has its Deployment (with
    --all-processors; otherwise the Deployments present must be processors of the topology, an
    optional one only if the chart deploys it on request: the notifier), and so does each
    processor named by --also, running `mailstream run <processor>`;
  * replicas never exceed partitions: each Deployment's replicas, HPA maxReplicas and KEDA
    maxReplicaCount are at most the partition count of the processor's input topic, taken from
    topology.yaml here (not from the chart's annotations);
  * every container is hardened (non-root, read-only root filesystem, no privilege escalation,
    all capabilities dropped, seccomp RuntimeDefault) and has resource requests and limits;
    processors have /healthz liveness and startup probes and a /readyz readiness probe;
  * nothing secret is rendered: no Secret objects, and no environment variable that looks like a
    credential has a literal value (they must come from secretKeyRef);
  * each Deployment has its PodDisruptionBudget; the topology Job is a pre-install/pre-upgrade
    hook running `mailstream topology apply`; KafkaTopic partitions match the topology.

Prints one line per finding and exits 1 if there are any; prints a one-line summary otherwise.
Needs PyYAML (the kubernetes-validate venv has it).
"""

import re
import sys

import yaml

# Optional processors of the topology the chart deploys when asked (processors.<name>.enabled).
DEPLOYABLE_OPTIONAL = {"notifier"}
SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|DATABASE_URL|CREDENTIAL|PRIVATE_KEY)")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    all_processors = "--all-processors" in sys.argv
    also = {n for a in sys.argv[1:] if a.startswith("--also=") for n in a[len("--also="):].split(",") if n}
    topology_path, rendered_path = args
    with open(topology_path) as f:
        topo = yaml.safe_load(f)
    with open(rendered_path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]

    problems = []
    defaults = topo["defaults"]["partitions"]

    def partitions(topic):
        return topo["topics"][topic].get("partitions") or defaults

    wanted = {name: spec for name, spec in topo["processors"].items() if not spec.get("optional")}
    deployable = {
        name: spec for name, spec in topo["processors"].items() if name in wanted or name in DEPLOYABLE_OPTIONAL
    }
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    # --- a Deployment per processor -------------------------------------------------------------
    deployments = {}
    for d in by_kind.get("Deployment", []):
        component = d["metadata"]["labels"].get("app.kubernetes.io/component")
        deployments[component] = d
        if component not in deployable:
            problems.append(f"Deployment {d['metadata']['name']}: component {component!r} is not a processor of topology.yaml")
            continue
        container = d["spec"]["template"]["spec"]["containers"][0]
        if container.get("args") != ["run", component]:
            problems.append(f"Deployment {d['metadata']['name']}: args {container.get('args')} instead of ['run', '{component}']")
    for name in (set(wanted) if all_processors else set()) | also:
        if name not in deployments:
            problems.append(f"processor {name} of topology.yaml has no Deployment")

    # --- replicas <= partitions -------------------------------------------------------------------
    names_to_processor = {d["metadata"]["name"]: c for c, d in deployments.items()}

    def cap(processor):
        spec = deployable.get(processor) or {}
        return partitions(spec["input"]) if spec.get("input") else None

    for component, d in deployments.items():
        limit = cap(component)
        replicas = d["spec"].get("replicas")
        if limit is not None and replicas is not None and replicas > limit:
            problems.append(f"Deployment {d['metadata']['name']}: replicas {replicas} > {limit} partitions of {deployable[component]['input']}")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        component = names_to_processor.get(hpa["spec"]["scaleTargetRef"]["name"])
        limit = cap(component)
        if component is None:
            problems.append(f"HPA {hpa['metadata']['name']}: targets no processor Deployment")
        elif limit is not None and hpa["spec"]["maxReplicas"] > limit:
            problems.append(f"HPA {hpa['metadata']['name']}: maxReplicas {hpa['spec']['maxReplicas']} > {limit} partitions")
    for so in by_kind.get("ScaledObject", []):
        component = names_to_processor.get(so["spec"]["scaleTargetRef"]["name"])
        limit = cap(component)
        if component is None or limit is None:
            problems.append(f"ScaledObject {so['metadata']['name']}: targets no processor with an input topic")
            continue
        if so["spec"]["maxReplicaCount"] > limit:
            problems.append(f"ScaledObject {so['metadata']['name']}: maxReplicaCount {so['spec']['maxReplicaCount']} > {limit} partitions")
        trigger = so["spec"]["triggers"][0]["metadata"]
        if not trigger["topic"].endswith(deployable[component]["input"]) or not trigger["consumerGroup"].endswith(f"mailstream-{component}"):
            problems.append(f"ScaledObject {so['metadata']['name']}: topic/group {trigger['topic']}/{trigger['consumerGroup']} do not match {component}")
        if trigger.get("allowIdleConsumers") != "false":
            problems.append(f"ScaledObject {so['metadata']['name']}: allowIdleConsumers must be \"false\"")

    # --- hardening, resources, probes ---------------------------------------------------------------
    workloads = [(d, d["spec"]["template"]["spec"]) for d in by_kind.get("Deployment", [])]
    workloads += [(j, j["spec"]["template"]["spec"]) for j in by_kind.get("Job", [])]
    workloads += [(c, c["spec"]["jobTemplate"]["spec"]["template"]["spec"]) for c in by_kind.get("CronJob", [])]
    for obj, pod in workloads:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True or (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod securityContext must set runAsNonRoot and seccomp RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false")
        for c in pod["containers"]:
            sc = c.get("securityContext") or {}
            ok = (
                sc.get("runAsNonRoot") is True
                and sc.get("readOnlyRootFilesystem") is True
                and sc.get("allowPrivilegeEscalation") is False
                and (sc.get("capabilities") or {}).get("drop") == ["ALL"]
                and (sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
                and (sc.get("runAsUser") or 0) > 0
            )
            if not ok:
                problems.append(f"{where}/{c['name']}: container securityContext is not hardened: {sc}")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                if not (res.get(part) or {}).get("memory") or not (res.get(part) or {}).get("cpu"):
                    problems.append(f"{where}/{c['name']}: resources.{part} needs cpu and memory")
            for env in c.get("env") or []:
                if SECRETISH.search(env["name"]) and "value" in env:
                    problems.append(f"{where}/{c['name']}: {env['name']} has a literal value; secrets come from secretKeyRef")
            if obj["kind"] == "Deployment":
                live, ready, started = (
                    ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                    for probe in ("livenessProbe", "readinessProbe", "startupProbe")
                )
                if (live, ready, started) != ("/healthz", "/readyz", "/healthz"):
                    problems.append(
                        f"{where}/{c['name']}: probes are {live}, {ready}, {started} instead of /healthz, /readyz, /healthz (startup)"
                    )
                if c.get("image", "").endswith(":latest"):
                    problems.append(f"{where}/{c['name']}: image tag latest")

    # --- nothing secret rendered ------------------------------------------------------------------
    for s in by_kind.get("Secret", []):
        problems.append(f"Secret {s['metadata']['name']} rendered: secrets are referenced, never rendered")
    for cm in by_kind.get("ConfigMap", []):
        for key, value in (cm.get("data") or {}).items():
            if SECRETISH.search(key):
                problems.append(f"ConfigMap {cm['metadata']['name']}: key {key} looks like a secret")

    # --- PDBs, the topology Job, KafkaTopics ------------------------------------------------------------
    pdb_selectors = [p["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") for p in by_kind.get("PodDisruptionBudget", [])]
    for component in deployments:
        if component not in pdb_selectors:
            problems.append(f"Deployment of {component} has no PodDisruptionBudget")
    for job in by_kind.get("Job", []):
        annotations = job["metadata"].get("annotations") or {}
        if annotations.get("helm.sh/hook") != "pre-install,pre-upgrade":
            problems.append(f"Job {job['metadata']['name']}: not a pre-install,pre-upgrade hook")
        if job["spec"]["template"]["spec"]["containers"][0].get("args") != ["topology", "apply"]:
            problems.append(f"Job {job['metadata']['name']}: does not run `mailstream topology apply`")
    for kt in by_kind.get("KafkaTopic", []):
        name = kt["spec"]["topicName"]  # with the topic prefix
        logical = max((t for t in topo["topics"] if name.endswith(t)), key=len, default=None)
        if name.endswith(".dlq"):
            want = 1  # derived dead-letter topics have one partition
        elif logical is not None:
            want = partitions(logical)
        else:
            problems.append(f"KafkaTopic {name}: not a topic of topology.yaml")
            continue
        if kt["spec"]["partitions"] != want:
            problems.append(f"KafkaTopic {name}: {kt['spec']['partitions']} partitions, topology.yaml says {want}")

    for p in problems:
        print(f"  {rendered_path}: {p}")
    if problems:
        sys.exit(1)
    kinds = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
    print(f"{len(docs)} objects ({kinds}); Deployments: {', '.join(sorted(deployments))}")


if __name__ == "__main__":
    main()
