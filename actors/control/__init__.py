"""The control side of a node: ControlRunner, its ts2021 transport and the state-store interface."""

from pytsnet.actors.control.runner import ControlRunner, RunnerConfig
from pytsnet.actors.control.store import StateStore

__all__ = ["ControlRunner", "RunnerConfig", "StateStore"]
