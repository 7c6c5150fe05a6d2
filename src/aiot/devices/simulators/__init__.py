"""Simulated devices (camera, light, temperature sensors; fan, display, AC, lamp, alarm controllers)."""

from .controllers import CONTROLLER_SIMS, AcSim, AlarmSim, ControllerSim, DisplaySim, FanSim, LampSim
from .links import Connection
from .runner import SIM_MODELS, SimDevice, SimulatorRunner, run_simulators
from .sensors import SENSOR_SIMS, CameraSim, LightSim, SensorSim, TemperatureSim
from .types import SIM_TYPES, sim_type_json

__all__ = [
    "CONTROLLER_SIMS",
    "SENSOR_SIMS",
    "SIM_MODELS",
    "SIM_TYPES",
    "AcSim",
    "AlarmSim",
    "CameraSim",
    "Connection",
    "ControllerSim",
    "DisplaySim",
    "FanSim",
    "LampSim",
    "LightSim",
    "SensorSim",
    "SimDevice",
    "SimulatorRunner",
    "TemperatureSim",
    "run_simulators",
    "sim_type_json",
]
