//! The skerry image store (`/zones/images/<uuid>/`) and IMGAPI client/server.
