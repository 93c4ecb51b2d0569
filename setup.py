"""Build tincapp: the Python package plus the Cython hot paths in pyx/.

Every pyx/NAME.pyx becomes the private extension module tincapp._NAME. The extensions do not
link against libsodium: pyx/sodium.pxd resolves its symbols at import time from the shared
object PyNaCl ships (see tincapp/sodium.py), so no -lsodium and no run-time library path.
"""
import os

from setuptools import Extension, find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    scope = {}
    with open(os.path.join(HERE, "tincapp", "version.py")) as f:
        exec(f.read(), scope)
    return scope["__version__"]


def extensions():
    from Cython.Build import cythonize

    modules = []
    for fname in sorted(os.listdir(os.path.join(HERE, "pyx"))):
        if fname.endswith(".pyx"):
            name = fname[:-4]
            modules.append(Extension(
                f"tincapp._{name}",
                [os.path.join("pyx", fname)],
                extra_compile_args=["-O3"],
                libraries=["dl"],
            ))
    return cythonize(
        modules,
        include_path=["pyx"],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False,
                             "initializedcheck": False, "cdivision": True},
    )


setup(
    name="tincapp",
    version=read_version(),
    description="A mesh VPN daemon that speaks tinc 1.1's protocol",
    packages=find_packages(include=["tincapp", "tincapp.*"]),
    ext_modules=extensions(),
    python_requires=">=3.10",
    install_requires=["pynacl>=1.5", "configparser-crypt>=1.1", "lz4>=4.0", "python-lzo>=1.15"],
    entry_points={"console_scripts": ["tincapp = tincapp.__main__:main"]},
    zip_safe=False,
)
