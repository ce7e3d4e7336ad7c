"""Apache Beam jobs: co-occurrence scores (paper eq. 2) and training pairs."""
