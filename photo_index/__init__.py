"""photo_index: where embedded photos are stored and searched (the folder backend and Milvus)."""
