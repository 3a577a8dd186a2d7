"""Real-kernel test of active-active directors over BGP: one VM boot for tests/kernel/bgp/.

The topology (a router with BIRD and ECMP, two directors each with pymon + BIRD, two
LVS-DR real servers, a client) lives in network namespaces inside a VM booted with
Debian's kernel (tests/kernel/vm.py: virtme-ng, TCG; the host kernel has no IPVS), its
own boot so it can be run alone (~4 minutes under TCG):

    python3 -m pytest -q tests/test_kernel_bgp.py -s

Needs bird2 on the host (the guest shares its filesystem). Skipped, saying why, only
when no VM can be booted here or bird is not installed.
"""

from __future__ import annotations

import shutil

import pytest
import vm  # tests/kernel/vm.py (tests/kernel/conftest.py puts it on the path)


@pytest.mark.kernel
def test_active_active_bgp_inside_vm() -> None:
    if not shutil.which("bird"):
        pytest.skip("bird2 not installed (apt-get install bird2)")
    vm.pytest_in_vm("tests/kernel/bgp/", 900, "-s")
