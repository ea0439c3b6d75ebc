"""`python -m crds`: regenerate the CRD YAML from the models."""

from crds.generate import write

for path in write():
    print(f"wrote {path}")
