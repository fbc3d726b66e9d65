"""Type stub for the compiled seedlink_fast._ext.fir (source: src/_ext/fir.pyx)."""
from typing import Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

_Kernel = Literal["scalar", "vec128", "avx2", "avx512", "auto"]

def available_kernels() -> list[str]: ...

class FirDecimator:
    """Streaming FIR filter + decimator with SeisComP seedlink's numerics:
    output k = sum_{i ascending} (x[k*D + i] * taps[i]) * gain, from 0.0."""

    def __init__(
        self,
        taps: Union[Sequence[float], npt.ArrayLike],
        decimation: int,
        gain: float = 1.0,
        *,
        kernel: Optional[_Kernel] = None,
    ) -> None: ...
    def process(
        self, x: Union[npt.NDArray[np.float64], npt.NDArray[np.int32], npt.ArrayLike]
    ) -> npt.NDArray[np.float64]: ...
    def reset(self) -> None: ...
    def max_out(self, n: int) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def decimation(self) -> int: ...
    @property
    def gain(self) -> float: ...
    @property
    def taps(self) -> npt.NDArray[np.float64]: ...
    @property
    def kernel(self) -> str: ...
