from typing import Any, List, Tuple

import numpy as np

def encode(samples: Any, level: int = ..., nframes: int = ..., prev_sample: int = ...,
           flush: bool = ...) -> Tuple[bytes, List[Tuple[int, int, int]], int]: ...
def decode(data: Any, nsamples: int, level: int = ...) -> np.ndarray: ...
