"""k8s/overlays/kserve (issue 24): a KServe InferenceService (modelFormat mlflow) for the pro-endpoint,
served by a ServingRuntime in PRO's image, rendered offline with kustomize."""

from __future__ import annotations

from .helpers import K8S


def test_kserve_overlay_serves_the_endpoint_as_an_mlflow_model(render):
    _, objs = render(K8S / "overlays" / "kserve")
    by_kind = {o["kind"]: o for o in objs}
    assert set(by_kind) == {"InferenceService", "ServingRuntime"}
    isvc, rt = by_kind["InferenceService"], by_kind["ServingRuntime"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["metadata"]["namespace"] == "pro"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "mlflow" and model["runtime"] == rt["metadata"]["name"]
    assert model["storageUri"].startswith("s3://") and model["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "mlflow" in {f["name"] for f in rt["spec"]["supportedModelFormats"]}
    (c,) = rt["spec"]["containers"]
    assert c["args"][:5] == ["mlflow", "models", "serve", "-m", "/mnt/models"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    # the request timeout is set, and the same as the InferenceService's
    assert int(env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"]) == isvc["spec"]["predictor"]["timeout"]
    # a CPU limit: torch's threads follow it
    assert c["resources"]["limits"]["cpu"] and c["securityContext"]["runAsNonRoot"] is True
