//! ZooKeeper sessions bridged into coroutines, and leader election among the nodes of a service (`QuorumCluster`, `QuorumServer`); built in the quorum issue.
