"""Check built wheels against the setup.cfg they were built from (CI, issue 30).

    python .ci/check_wheels.py DIR_OF_WHEELS

For kvae (./setup.cfg) and kvae-serve (./export/setup.cfg): exactly one wheel in DIR, whose METADATA has
``Requires-Python`` equal to ``python_requires``, a ``Requires-Dist`` line for every ``install_requires``
entry (same name and version specifier, no extra marker) and a ``Provides-Extra`` for every extra.
Prints one line per wheel; exits 1 with one line per problem.
"""
import configparser
import email.parser
import glob
import os
import sys
import zipfile

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PROJECTS = {"kvae": "setup.cfg", "kvae_serve": os.path.join("export", "setup.cfg")}


def metadata(wheel):
    """The wheel's METADATA as an ``email.message.Message``."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(z.read(name).decode())


def declared(cfg_path):
    """(python_requires, {name: specifier}, extras) as setup.cfg declares them."""
    cfg = configparser.ConfigParser()
    cfg.read(cfg_path)
    requires = [Requirement(line) for line in cfg.get("options", "install_requires", fallback="").split("\n") if line]
    extras = cfg["options.extras_require"].keys() if cfg.has_section("options.extras_require") else []
    return (cfg.get("options", "python_requires", fallback=None),
            {canonicalize_name(r.name): str(r.specifier) for r in requires}, set(extras))


def problems(wheel, cfg_path):
    """Lines naming each way the wheel's metadata differs from setup.cfg (empty when it matches)."""
    python_requires, requires, extras = declared(cfg_path)
    meta = metadata(wheel)
    name, found = os.path.basename(wheel), []
    if not python_requires or not requires:
        found.append(f"{cfg_path}: no python_requires or install_requires under [options]")
    if meta.get("Requires-Python") != python_requires:
        found.append(f"{name}: Requires-Python is {meta.get('Requires-Python')!r}, setup.cfg says {python_requires!r}")
    listed = {}
    for line in meta.get_all("Requires-Dist") or []:
        r = Requirement(line)
        if r.marker is None:
            listed[canonicalize_name(r.name)] = str(r.specifier)
    for dist, spec in sorted(requires.items()):
        if listed.get(dist) != spec:
            found.append(f"{name}: Requires-Dist for {dist}{spec} is {listed.get(dist)!r}")
    missing_extras = extras - set(meta.get_all("Provides-Extra") or [])
    if missing_extras:
        found.append(f"{name}: no Provides-Extra for {', '.join(sorted(missing_extras))}")
    return found


def main(folder):
    failed = []
    for project, cfg in PROJECTS.items():
        wheels = glob.glob(os.path.join(folder, f"{project}-*.whl"))
        if len(wheels) != 1:
            failed.append(f"{folder}: {len(wheels)} wheels of {project}, expected 1")
            continue
        found = problems(wheels[0], os.path.join(ROOT, cfg))
        failed += found
        if not found:
            meta = metadata(wheels[0])
            print(f"{os.path.basename(wheels[0])}: Requires-Python {meta['Requires-Python']}, "
                  f"{len(meta.get_all('Requires-Dist') or [])} Requires-Dist lines match {cfg}")
    for line in failed:
        print(f"check_wheels: error: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
