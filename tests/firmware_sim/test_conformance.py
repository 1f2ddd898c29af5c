from __future__ import annotations

import pytest

from campuswatch.firmware_sim.device import SimDevice
from campuswatch.firmware_sim.fleet import DEVICE_CLASSES
from campuswatch.firmware_sim.scanner import Scanner
from tests.firmware_sim.conformance import check_device_conformance
from tests.support.mosquitto import MosquittoBroker

MODELS: list[type[SimDevice]] = [*DEVICE_CLASSES.values(), Scanner]


def test_every_model_is_checked() -> None:
    expected = {
        "pc",
        "projector",
        "interactive_panel",
        "camera",
        "env_sensor",
        "access_point",
        "smart_plug",
        "access_controller",
        "scanner",
    }
    assert {model.device_type for model in MODELS} == expected


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.device_type)
def test_device_model_conforms(mosquitto: MosquittoBroker, model: type[SimDevice]) -> None:
    check_device_conformance(mosquitto, model)
