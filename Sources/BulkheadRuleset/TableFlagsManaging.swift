/// A backend that puts flags of its own on the table it programs: the netlink backend's
/// `owner,persist`, which lock the table to the running process and keep it after exit.
///
/// The planner asks for them so that a table that lacks them (created by another program,
/// restored with `nft -f`) is replaced rather than updated: the kernel refuses to add `owner`
/// or `persist` to an existing table (EOPNOTSUPP), which would fail every later commit.
public protocol TableFlagsManaging {
    /// The flags the backend keeps on the table (empty when it manages none).
    var managedTableFlags: TableFlags { get }
}
