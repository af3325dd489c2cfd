"""The Kubernetes overlays render, validate strictly, and agree with the
services' settings: queue names, tables, ports, grace periods, GPU placement."""

from __future__ import annotations

import pytest
import yaml

from shared.identity.tokens import AuthSettings
from shared.runtime.topology import STAGES
from tests.deploy.support import (
    KEDA_SCHEMA,
    OVERLAYS,
    SETTINGS,
    check_clinics_file,
    container_env,
    of_kind,
    reads_clinics_file,
    rendered,
    run_tool,
    settings_from,
    tool,
    unknown_variables,
)

KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_resources_validate_strictly(overlay, tmp_path):
    docs = rendered(overlay)
    core = [doc for doc in docs if not doc["apiVersion"].startswith("keda.sh/")]
    assert {doc["kind"] for doc in docs} - {doc["kind"] for doc in core} == KEDA_KINDS
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(yaml.safe_dump_all(core))
    result = run_tool(tool("kubernetes-validate"), "--strict", "--quiet", str(path))
    output = result.stdout + result.stderr
    # A kind without a schema is only a warning to the tool; here it is a failure.
    assert result.returncode == 0 and "Couldn't find schema" not in output and "ERROR" not in output, output


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaled_objects_match_kedas_schema(overlay, tmp_path):
    scaled = list(of_kind(rendered(overlay), "ScaledObject").values())
    assert len(scaled) == len(STAGES)
    paths = []
    for doc in scaled:
        paths.append(tmp_path / f"{doc['metadata']['name']}.yaml")
        paths[-1].write_text(yaml.safe_dump(doc))
    result = run_tool(tool("check-jsonschema"), "--schemafile", str(KEDA_SCHEMA), *map(str, paths))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaling_follows_each_stage_queue_with_pod_identity(overlay, monkeypatch):
    docs = rendered(overlay)
    auth = of_kind(docs, "TriggerAuthentication")
    deployments = of_kind(docs, "Deployment")
    for stage in STAGES:
        name = f"schizodot-{stage}"
        settings = settings_from(SETTINGS[stage], container_env(docs, stage), monkeypatch)
        scaled = of_kind(docs, "ScaledObject")[name]["spec"]
        assert scaled["scaleTargetRef"]["name"] in deployments
        (trigger,) = scaled["triggers"]
        assert trigger["type"] == "aws-sqs-queue"
        assert trigger["metadata"]["queueURL"] == settings.queue_name(stage)
        assert trigger["metadata"]["awsRegion"] == settings.aws_region
        # In-flight messages count, so a worker busy with a job is not scaled away.
        assert trigger["metadata"]["scaleOnInFlight"] == "true"
        assert auth[trigger["authenticationRef"]["name"]]["spec"]["podIdentity"]["provider"] == "aws"
    assert of_kind(docs, "ScaledObject")["schizodot-vision"]["spec"]["minReplicaCount"] == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_settings_are_the_services_own(overlay, monkeypatch):
    docs = rendered(overlay)
    for stage in STAGES:
        env = container_env(docs, stage)
        assert unknown_variables(stage, env) == [], f"{stage}: variables no settings class reads"
        settings = settings_from(SETTINGS[stage], env, monkeypatch)
        assert (settings.jobs_table, settings.users_table) == ("SchizodotJobs", "SchizodotUsers")
        assert settings.bucket == "schizodot-media" and settings.aws_endpoint_url is None
        # The ports the probes and Services use are the ones the service listens on.
        container = of_kind(docs, "Deployment")[f"schizodot-{stage}"]["spec"]["template"]["spec"]["containers"][0]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["metrics"] == int(env["SCHIZODOT_METRICS_PORT"])
        if stage == "ingest":
            assert ports["http"] == settings.api_port and settings.api_host == "0.0.0.0"
        if stage == "results":
            assert ports["http"] == settings.api_port and settings.api_host == "0.0.0.0"
        # The pseudonym key comes from a Secret made outside the repository, required by every service.
        assert {"secretRef": {"name": "schizodot-secrets"}} in container["envFrom"], stage
        if stage in ("ingest", "results"):  # the APIs check people's tokens against the provider's JWKS
            auth = settings_from(AuthSettings, env, monkeypatch)
            assert auth.bearer_configured and auth.jwks_url and auth.jwks_url.startswith("https://"), stage


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down_and_drain_before_they_are_killed(overlay, monkeypatch):
    docs = rendered(overlay)
    budgets = of_kind(docs, "PodDisruptionBudget")
    accounts = of_kind(docs, "ServiceAccount")
    for stage in STAGES:
        name = f"schizodot-{stage}"
        pod = of_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
        assert security["readOnlyRootFilesystem"] and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= set(container["resources"])
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
        grace = settings_from(SETTINGS[stage], container_env(docs, stage), monkeypatch).shutdown_grace_seconds
        assert pod["terminationGracePeriodSeconds"] >= grace + 15, f"{stage}: no time to release its messages"
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= pod_labels(docs, name).items()
        role = accounts[pod["serviceAccountName"]]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert role.startswith("arn:aws:iam::") and role.endswith(f":role/{name}") and "ACCOUNT_ID" not in role


def pod_labels(docs, name: str) -> dict[str, str]:
    return of_kind(docs, "Deployment")[name]["spec"]["template"]["metadata"]["labels"]


def test_vision_runs_on_gpu_nodes_in_prod_and_on_cpu_in_dev():
    gpu_pod = of_kind(rendered("prod"), "Deployment")["schizodot-vision"]["spec"]["template"]["spec"]
    assert gpu_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_pod["tolerations"]
    assert gpu_pod["nodeSelector"]
    assert gpu_pod["containers"][0]["image"].endswith("-cuda")
    cpu_pod = of_kind(rendered("dev"), "Deployment")["schizodot-vision"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu_pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in cpu_pod and "nodeSelector" not in cpu_pod


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_that_reads_the_clinics_file_has_it_mounted(overlay, monkeypatch, tmp_path):
    """ingest (prompts, sign-in), audio (the languages that choose transcription) and results
    (time zones, alert rules): each pod mounts the one schizodot-clinics ConfigMap read-only
    where its SCHIZODOT_CLINICS_FILE points, and the file in it is one they all accept."""
    docs = rendered(overlay)
    clinics = of_kind(docs, "ConfigMap")["schizodot-clinics"]["data"]
    readers = [stage for stage in STAGES if reads_clinics_file(stage)]
    assert {"ingest", "audio", "results"} <= set(readers)
    for stage in readers:
        path = settings_from(SETTINGS[stage], container_env(docs, stage), monkeypatch).clinics_file
        assert path is not None, f"{stage} reads the clinics file, but its pod is given none"
        pod = of_kind(docs, "Deployment")[f"schizodot-{stage}"]["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        mount = mounts[str(path.parent)]
        volume = {v["name"]: v for v in pod["volumes"]}[mount["name"]]
        assert mount.get("readOnly") is True and volume["configMap"]["name"] == "schizodot-clinics", stage
        assert path.name in clinics, stage
    (tmp_path / "clinics.json").write_text(clinics["clinics.json"])
    check_clinics_file(tmp_path / "clinics.json")
