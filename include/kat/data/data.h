// Umbrella header for the data pipeline: datasets, augmentation, deterministic loader.
#pragma once
#include "kat/data/augment.h"
#include "kat/data/dataset.h"
#include "kat/data/image_io.h"
#include "kat/data/loader.h"
