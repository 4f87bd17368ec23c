"""PET photon-coincidence detection: a detector simulator, the time-window sorter and PETNet."""

from joulebench.tasks.pet.task import PET

__all__ = ["PET"]
