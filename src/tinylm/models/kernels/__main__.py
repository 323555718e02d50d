"""`python -m tinylm.models.kernels`: build the CPU kernels now (`make setup` does), and say what runs."""

from . import ops, vnni

if ops() is None:
    print("tinylm CPU kernels: unavailable here, torch's ops will be used")
else:
    print(
        f"tinylm CPU kernels: built (integer matmuls: {'yes' if vnni() else 'no, this CPU lacks AVX-512 VNNI'})"
    )
