"""`python -m tinylm.models.kernels`: build the int4 kernel now (`make setup` does), and say if it loads."""

from . import ops

print(
    "tinylm int4 kernel:", "built" if ops() is not None else "unavailable here, torch's kernel will be used"
)
