"""MkDocs hook for the API site (mkdocs.yml ``hooks:``): after the build, every public class and function of kvae
and kvae_serve (found by Griffe in the sources, the way tests/test_api_site.py finds them by importing) must be
rendered, i.e. listed in the site's ``objects.inv``; each one that is not logs a warning, so
``mkdocs build --strict`` fails on a public symbol missing from docs/api.
"""
import logging
import os
import zlib

import griffe

PACKAGES = ("kvae", "kvae_serve")
NOT_IN_API = ("kvae.cli",)  # the command line, documented as commands in docs/cli.md
log = logging.getLogger("mkdocs.hooks.api_coverage")


def public_symbols(root):
    """Paths of the classes and functions a public module of kvae or kvae_serve defines under a public name."""
    found = []
    for package in PACKAGES:
        stack = [griffe.load(package, search_paths=[root, os.path.join(root, "export")], docstring_parser=None)]
        while stack:
            module = stack.pop()
            if any(part.startswith("_") for part in module.path.split(".")) or any(
                    module.path == m or module.path.startswith(f"{m}.") for m in NOT_IN_API):
                continue
            for name, member in module.members.items():
                if member.is_alias or name.startswith("_"):
                    continue
                if member.is_module:
                    stack.append(member)
                elif member.is_class or member.is_function:
                    found.append(member.path)
    return found


def rendered(site_dir):
    """Names that mkdocstrings rendered (priority 1 entries of the site's Sphinx inventory)."""
    with open(os.path.join(site_dir, "objects.inv"), "rb") as f:
        for _ in range(4):
            f.readline()
        lines = zlib.decompress(f.read()).decode().splitlines()
    return {line.split(" ")[0] for line in lines if line.split(" ")[2] == "1"}


def on_post_build(config, **kwargs):
    symbols = public_symbols(os.path.dirname(config.config_file_path))
    missing = sorted(set(symbols) - rendered(config.site_dir))
    for path in missing:
        log.warning("public %s is on no page of docs/api: add its module's `::: %s` block", path, path.rsplit(".", 1)[0])
    log.info("api coverage: %d public classes and functions, %d missing from docs/api", len(symbols), len(missing))
