"""Maps the top-level folders into the ``joulebench`` namespace (joulebench.harness, joulebench.tasks,
...), so installing never puts generic names such as ``tasks`` into site-packages."""

from setuptools import find_packages, setup

ROOTS = ("harness", "tasks", "methods", "leaderboard", "cluster")
package_dir = {}
for root in ROOTS:
    for sub in [root, *(f"{root}.{p}" for p in find_packages(root))]:
        package_dir[f"joulebench.{sub}"] = sub.replace(".", "/")

setup(packages=sorted(package_dir), package_dir=package_dir)
