import pytest
from pydantic import BaseModel

from sep_bench.detectors import DetectorSpec, UnknownDetectorError, get_detector, list_detectors, register


class _Cfg(BaseModel):
    pass


def _spec(name):
    return DetectorSpec(name=name, summary="", paper="", repo="", config=_Cfg, build=lambda c, w: None,
                        views=lambda c, t, h: None)


def test_builtin_detectors_come_from_entry_points():
    assert {"npr", "sep", "univfd", "cnnspot", "ssp"} <= set(list_detectors())
    assert get_detector("npr").name == "npr"


def test_unknown_detector_lists_the_available_ones():
    with pytest.raises(UnknownDetectorError) as err:
        get_detector("nope")
    assert "unknown detector 'nope'; available: " in str(err.value) and "npr" in str(err.value)


def test_duplicate_registration_raises():
    register(_spec("dup_test"))
    with pytest.raises(ValueError, match="registered twice"):
        register(_spec("dup_test"))
