"""Build the Cython kernels in src/_ext/ as modules of seedlink_fast._ext.

Release builds switch off bounds and wraparound checks here, never in the
sources, so that SEEDLINK_FAST_DEBUG=1 can switch them back on (with line
tracing and an annotated HTML listing).
"""
import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("SEEDLINK_FAST_DEBUG", "") not in ("", "0")

directives = {
    "language_level": "3",
    "embedsignature": True,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
}
if DEBUG:
    directives["linetrace"] = True

# No FMA contraction: FIR sums must round exactly as SeisComP's do.
compile_args = ["-ffp-contract=off"] + (["-O0", "-g"] if DEBUG else ["-O3"])
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if DEBUG:
    macros += [("CYTHON_TRACE_NOGIL", "1"), ("SL_DEBUG", "1")]

extensions = [
    Extension(
        "seedlink_fast._ext." + os.path.splitext(os.path.basename(path))[0],
        [path],
        include_dirs=["src/_ext", numpy.get_include()],
        define_macros=macros,
        extra_compile_args=compile_args,
    )
    for path in sorted(glob.glob("src/_ext/*.pyx"))
]
# Developer shortcut: SEEDLINK_FAST_ONLY=fir,steim rebuilds just those kernels.
_only = [m for m in os.environ.get("SEEDLINK_FAST_ONLY", "").split(",") if m]
if _only:
    extensions = [e for e in extensions if e.name.rsplit(".", 1)[1] in _only]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["src/_ext"],
        compiler_directives=directives,
        annotate=DEBUG,
    ),
)
