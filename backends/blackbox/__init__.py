"""The blackbox repository: tabulated benchmarks replayed by the simulated backend.

    from backends.blackbox import load_blackbox
    blackbox = load_blackbox("lcbench", task="blood-transfusion-service-center")
"""

from backends.blackbox.blackbox import Blackbox, BlackboxError
from backends.blackbox.frame import blackbox_from_dataframe
from backends.blackbox.repository import available_blackboxes, load_blackbox, load_blackbox_path
from backends.blackbox.surrogate import NearestNeighbourSurrogate

__all__ = [
    "Blackbox",
    "BlackboxError",
    "NearestNeighbourSurrogate",
    "available_blackboxes",
    "blackbox_from_dataframe",
    "load_blackbox",
    "load_blackbox_path",
]
