"""One model construction or load at a time in a process.

diffusers and transformers build models on the meta device by patching torch globally for the length of a
load; a model built in another thread meanwhile gets meta tensors (Prefect runs mapped tasks in threads).
Every load and every construction of a loaded model holds this lock.
"""

from __future__ import annotations

import threading

LOADING = threading.RLock()
