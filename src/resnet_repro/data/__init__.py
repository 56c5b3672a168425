"""Reading the data (the CIFAR-10 archive, image folders), its statistics and augmentations, and the two
loader backends; docs/data.md."""
