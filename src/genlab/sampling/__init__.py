"""Samplers written once, against an ODE drift and a time grid, for every continuous model."""

from genlab.sampling.ode import SampleResult, dopri5, euler, midpoint, solve, time_grid

__all__ = ["SampleResult", "dopri5", "euler", "midpoint", "solve", "time_grid"]
