"""A served model exported from a comparison pane records the sampling parameters it was tried
with, in every format that carries annotations, and nothing when there are none."""

from __future__ import annotations

import json
from pathlib import Path

from podlab.core.export import export_service
from podlab.core.export.plan import ANNOTATION_SAMPLING
from podlab.core.settings import Settings
from tests.unit.test_export import by_path, kube_documents, make_service


def test_the_sampling_parameters_travel_as_an_annotation(smollm2_model: Path) -> None:
    service = make_service(smollm2_model, "winner", "key")
    sampling = {"temperature": 0.3, "top_p": 0.9, "stop": ["\n\n"]}
    files = by_path(export_service(service, settings=Settings(), sampling=sampling))
    [deployment, _service] = kube_documents(files["kube/deployment.yaml"])
    recorded = deployment["metadata"]["annotations"][ANNOTATION_SAMPLING]
    assert json.loads(recorded) == sampling
    [kserve] = [
        d
        for d in kube_documents(files["kserve/inferenceservice.yaml"])
        if d["kind"] == "InferenceService"
    ]
    assert json.loads(kserve["metadata"]["annotations"][ANNOTATION_SAMPLING]) == sampling
    [unit] = [text for path, text in files.items() if path.endswith(".container")]
    assert ANNOTATION_SAMPLING in unit

    plain = by_path(export_service(service, settings=Settings()))
    assert all(ANNOTATION_SAMPLING not in text for text in plain.values())
