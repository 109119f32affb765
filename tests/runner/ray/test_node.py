"""The cell process on its node: its environment."""

from __future__ import annotations

from soak.runner.ray.node import MATRIX_ENV, cell_environment


def test_cpu_cells_see_no_gpu_and_gpu_cells_count_in_pci_order():
    cpu = cell_environment({"PATH": "/bin"}, uses_gpu=False, matrix_id="m")
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu[MATRIX_ENV] == "m"
    gpu = cell_environment({"CUDA_VISIBLE_DEVICES": "1"}, uses_gpu=True, matrix_id="m")
    assert gpu["CUDA_VISIBLE_DEVICES"] == "1" and gpu["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
