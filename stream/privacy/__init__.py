"""Privacy on the platform: erased data leaving disks and brokers, the request client."""
