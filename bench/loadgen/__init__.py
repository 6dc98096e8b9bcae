"""kefuload (C, epoll) and its Python driver: multi-process, synchronized, histograms merged."""
