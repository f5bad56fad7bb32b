"""Builds hvd_hier and its extension hvd_hier._C through the top-level CMakeLists.txt.

Install into an environment that already has torch, without build isolation:

    pip install -e . --no-build-isolation

Environment: HVD_HIER_WITH_CUDA = 1 | 0 | auto (default auto), HVD_HIER_CUDA_ARCHITECTURES
(default "80;90", the CMake setting of the same name), CMAKE_BUILD_PARALLEL_LEVEL.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# One version string, in hvd_hier/_version.py.
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "hvd_hier" / "_version.py").read_text()).group(1)


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


def cuda_architectures() -> str:
    if "HVD_HIER_CUDA_ARCHS" in os.environ:
        raise SystemExit("HVD_HIER_CUDA_ARCHS is now HVD_HIER_CUDA_ARCHITECTURES (the name of the "
                         "CMake setting); set that instead")
    return os.environ.get("HVD_HIER_CUDA_ARCHITECTURES", "80;90")


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        out = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)
        cmake = os.environ.get("CMAKE", "cmake")
        args = [
            cmake,
            "-S", str(ROOT),
            "-B", str(build_dir),
            "-G", "Ninja",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out}",
            f"-DHVD_HIER_WITH_CUDA={os.environ.get('HVD_HIER_WITH_CUDA', 'auto')}",
            f"-DHVD_HIER_CUDA_ARCHITECTURES={cuda_architectures()}",
            f"-DCMAKE_BUILD_TYPE={'Debug' if self.debug else 'Release'}",
        ]
        subprocess.run(args, check=True)
        subprocess.run([cmake, "--build", str(build_dir)], check=True)


setup(
    name="hvd_hier",
    version=VERSION,
    description="Hier-AVG hierarchical averaging SGD for Horovod and PyTorch",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hvd_hier", "hvd_hier.*"]),
    ext_modules=[CMakeExtension("hvd_hier._C")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.9",
    install_requires=["torch>=2.1", "numpy"],
    zip_safe=False,
)
