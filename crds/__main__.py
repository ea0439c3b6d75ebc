"""`python -m goodput.crds`: regenerate the CRD YAML from the models."""

from goodput.crds.generate import write

for path in write():
    print(f"wrote {path}")
