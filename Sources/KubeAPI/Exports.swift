@_exported import KubeModel
