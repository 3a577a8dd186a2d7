"""tests/kernel/inside/ and tests/kernel/bgp/ run only inside the VM (see tests/kernel/test_kernel_ipvs.py).

On the host those tests would load ip_vs into (or fail on) the host kernel, so
they are not even collected unless PYMON_IN_VM=1 (set by tests/kernel/vm.py).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # vm.py, for the test files beside this one

collect_ignore_glob = [] if os.environ.get("PYMON_IN_VM") == "1" else ["inside/*", "bgp/*"]
