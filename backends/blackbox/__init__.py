"""The blackbox repository: tabulated and surrogate benchmarks replayed by the simulated backend.

    from backends.blackbox import load_blackbox
    blackbox = load_blackbox("lcbench", task="blood-transfusion-service-center")   # a table
    blackbox = load_blackbox("yahpo-lcbench", task="3945")   # YAHPO Gym's ONNX surrogate
"""

from backends.blackbox.blackbox import Blackbox, BlackboxError
from backends.blackbox.frame import blackbox_from_dataframe
from backends.blackbox.repository import available_blackboxes, load_blackbox, load_blackbox_path
from backends.blackbox.surrogate import CurveSurrogate, NearestNeighbourSurrogate
from backends.blackbox.yahpo import YahpoBlackbox

__all__ = [
    "Blackbox",
    "BlackboxError",
    "CurveSurrogate",
    "NearestNeighbourSurrogate",
    "YahpoBlackbox",
    "available_blackboxes",
    "blackbox_from_dataframe",
    "load_blackbox",
    "load_blackbox_path",
]
