//! Files and directories only their owner can read: keys, tokens, profiles,
//! registries, sandboxes.
//!
//! On Unix: modes 0600 and 0700, set as the file or directory is made (no
//! moment it is open wider). On Windows: a protected DACL that grants the
//! current user alone, set on the new file or directory; a directory's is
//! inherited by everything made in it, as a 0700 directory on Unix keeps
//! others out of everything below it.

use std::fs::File;
use std::io;
use std::path::Path;

/// Creates `path` for writing (it must not exist), readable and writable
/// by its owner only when `private`.
pub fn create_new(path: &Path, private: bool) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let file = options.open(path)?;
    #[cfg(windows)]
    if private {
        acl::owner_only(path, false)?;
    }
    Ok(file)
}

/// Makes `dir` (and its parents) if missing, and its owner's alone even if
/// it existed: a directory others cannot enter keeps every file in it from
/// them, whatever the file's own mode.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(windows)]
    acl::owner_only(dir, true)?;
    Ok(())
}

/// Opens the directory `path` as a handle for [`create_dir_at`] and
/// [`sync_file_system`](crate::disk::sync_file_system) (Windows opens a
/// directory only when asked with backup semantics).
pub fn open_dir(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(windows)]
    std::os::windows::fs::OpenOptionsExt::custom_flags(
        &mut options,
        windows_sys::Win32::Storage::FileSystem::FILE_FLAG_BACKUP_SEMANTICS,
    );
    options.open(path)
}

/// Makes the directory `name` in `parent` (an open handle on the directory
/// at `parent_path`), its owner's alone. On Unix the `mkdirat` resolves one
/// path component instead of the whole path, which matters at thousands of
/// sandboxes a second; elsewhere it is made by path, and inherits the
/// parent's owner-only ACL.
pub fn create_dir_at(parent: &File, parent_path: &Path, name: &str) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let _ = parent_path;
        let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
        // SAFETY: a valid directory descriptor and a NUL-terminated path.
        // Owner-only whatever the umask: a task's files are its owner's.
        if unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o700) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(unix))]
    {
        let _ = parent;
        std::fs::create_dir(parent_path.join(name))
    }
}

/// Makes every file and directory this process creates from now on its
/// owner's alone (a umask of 077), including those a library makes (a
/// database, a compiled-code cache). On Windows a process has no such mask:
/// there the work directory's inherited ACL ([`private_dir`]) does it.
pub fn owner_only_from_now_on() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(windows)]
mod acl {
    use std::io;
    use std::os::windows::ffi::OsStrExt;
    use std::path::Path;

    use windows_sys::Win32::Foundation::{GENERIC_ALL, LocalFree};
    use windows_sys::Win32::Security::Authorization::{
        EXPLICIT_ACCESS_W, SE_FILE_OBJECT, SET_ACCESS, SetEntriesInAclW, SetNamedSecurityInfoW,
        TRUSTEE_IS_NAME, TRUSTEE_IS_USER,
    };
    use windows_sys::Win32::Security::{
        ACL, DACL_SECURITY_INFORMATION, NO_INHERITANCE, PROTECTED_DACL_SECURITY_INFORMATION,
        SUB_CONTAINERS_AND_OBJECTS_INHERIT,
    };

    /// Replaces `path`'s DACL with one entry, full access for the current
    /// user, protected from the parent's inheritable entries; `inherit`
    /// passes it down to what a directory holds.
    pub fn owner_only(path: &Path, inherit: bool) -> io::Result<()> {
        let mut user: Vec<u16> = "CURRENT_USER\0".encode_utf16().collect();
        let mut access = EXPLICIT_ACCESS_W {
            grfAccessPermissions: GENERIC_ALL,
            grfAccessMode: SET_ACCESS,
            grfInheritance: if inherit {
                SUB_CONTAINERS_AND_OBJECTS_INHERIT
            } else {
                NO_INHERITANCE
            },
            ..Default::default()
        };
        access.Trustee.TrusteeForm = TRUSTEE_IS_NAME;
        access.Trustee.TrusteeType = TRUSTEE_IS_USER;
        access.Trustee.ptstrName = user.as_mut_ptr();
        let mut acl: *mut ACL = std::ptr::null_mut();
        // SAFETY: one valid entry whose trustee name outlives the call, no
        // old ACL, and a valid out pointer for the new one.
        let rc = unsafe { SetEntriesInAclW(1, &access, std::ptr::null(), &mut acl) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc as i32));
        }
        let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
        // SAFETY: a NUL-terminated wide path and the ACL just built; owner,
        // group and SACL are left as they are (null).
        let rc = unsafe {
            SetNamedSecurityInfoW(
                wide.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                acl,
                std::ptr::null(),
            )
        };
        // SAFETY: SetEntriesInAclW allocated `acl` with LocalAlloc.
        unsafe { LocalFree(acl.cast()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc as i32));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_files_and_directories_are_their_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("a/b");
        private_dir(&work).unwrap();
        create_new(&work.join("key"), true).unwrap();
        create_new(&work.join("cert"), false).unwrap();
        let parent = open_dir(&work).unwrap();
        create_dir_at(&parent, &work, "sandbox").unwrap();
        assert_eq!(
            create_dir_at(&parent, &work, "sandbox").unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            create_new(&work.join("key"), true).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        #[cfg(unix)]
        {
            assert_eq!(mode(&work), 0o700);
            assert_eq!(mode(&work.join("key")), 0o600);
            assert_eq!(mode(&work.join("sandbox")), 0o700);
        }
        #[cfg(windows)]
        if dacl::under_wine() {
            // Wine keeps no DACLs: it maps one to Unix mode bits and reads
            // back three entries made from them (checked: wine 8).
            eprintln!("under wine: the DACLs are not checked");
        } else {
            use windows_sys::Win32::Security::{
                CONTAINER_INHERIT_ACE, INHERITED_ACE, OBJECT_INHERIT_ACE,
            };
            let inherits = (CONTAINER_INHERIT_ACE | OBJECT_INHERIT_ACE) as u8;
            // The work dir: protected, the user alone, passed down.
            let (protected, aces) = dacl::read(&work);
            assert!(protected, "the work dir ignores its parent's entries");
            assert_eq!(aces, [(true, inherits)], "the user alone, inherited below");
            // The key: protected, the user alone.
            let (protected, aces) = dacl::read(&work.join("key"));
            assert!(protected);
            assert_eq!(aces, [(true, 0)]);
            // What the directory holds inherits its one entry, no more.
            for child in ["cert", "sandbox"] {
                let (_, aces) = dacl::read(&work.join(child));
                assert!(!aces.is_empty(), "{child} has an entry");
                for (user, flags) in aces {
                    assert!(user, "{child} grants the user alone");
                    assert_ne!(flags & INHERITED_ACE as u8, 0, "{child}: inherited");
                }
            }
        }
    }

    /// A file's DACL as this test checks it: is it protected from the
    /// parent's entries, and per entry, is it an allow entry for the current
    /// user, and its inheritance flags.
    #[cfg(windows)]
    mod dacl {
        use std::os::windows::ffi::OsStrExt;
        use std::path::Path;

        use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, LocalFree};
        use windows_sys::Win32::Security::Authorization::{GetNamedSecurityInfoW, SE_FILE_OBJECT};
        use windows_sys::Win32::Security::{
            ACCESS_ALLOWED_ACE, ACL, ACL_SIZE_INFORMATION, AclSizeInformation,
            DACL_SECURITY_INFORMATION, EqualSid, GetAce, GetAclInformation,
            GetSecurityDescriptorControl, GetTokenInformation, PSECURITY_DESCRIPTOR,
            SE_DACL_PROTECTED, TOKEN_QUERY, TOKEN_USER, TokenUser,
        };
        use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

        /// winnt.h's (windows-sys has it under another feature).
        const ACCESS_ALLOWED_ACE_TYPE: u8 = 0;

        /// Wine's ntdll has `wine_get_version`; Windows' has not.
        pub fn under_wine() -> bool {
            use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
            // SAFETY: NUL-terminated names; ntdll is loaded in every process.
            unsafe {
                let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
                GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
            }
        }

        pub fn read(path: &Path) -> (bool, Vec<(bool, u8)>) {
            let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
            let mut acl: *mut ACL = std::ptr::null_mut();
            let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
            let mut user = [0u8; 256];
            // SAFETY: valid out pointers and buffers of the sizes given; the
            // ACL points into the descriptor, freed last.
            unsafe {
                let rc = GetNamedSecurityInfoW(
                    wide.as_ptr(),
                    SE_FILE_OBJECT,
                    DACL_SECURITY_INFORMATION,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut acl,
                    std::ptr::null_mut(),
                    &mut descriptor,
                );
                assert_eq!(rc, 0, "GetNamedSecurityInfoW {}", path.display());
                let (mut control, mut revision) = (0u16, 0u32);
                assert_ne!(
                    GetSecurityDescriptorControl(descriptor, &mut control, &mut revision),
                    0
                );
                let mut token: HANDLE = std::ptr::null_mut();
                assert_ne!(
                    OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token),
                    0
                );
                let mut len = 0u32;
                assert_ne!(
                    GetTokenInformation(
                        token,
                        TokenUser,
                        user.as_mut_ptr().cast(),
                        user.len() as u32,
                        &mut len,
                    ),
                    0
                );
                CloseHandle(token);
                let me = (*user.as_ptr().cast::<TOKEN_USER>()).User.Sid;
                let mut size: ACL_SIZE_INFORMATION = std::mem::zeroed();
                assert_ne!(
                    GetAclInformation(
                        acl,
                        (&mut size as *mut ACL_SIZE_INFORMATION).cast(),
                        size_of::<ACL_SIZE_INFORMATION>() as u32,
                        AclSizeInformation,
                    ),
                    0
                );
                let aces = (0..size.AceCount)
                    .map(|i| {
                        let mut ace = std::ptr::null_mut();
                        assert_ne!(GetAce(acl, i, &mut ace), 0);
                        let ace = &*ace.cast::<ACCESS_ALLOWED_ACE>();
                        let sid = (&ace.SidStart as *const u32).cast_mut().cast();
                        let allowed = ace.Header.AceType == ACCESS_ALLOWED_ACE_TYPE;
                        (allowed && EqualSid(sid, me) != 0, ace.Header.AceFlags)
                    })
                    .collect();
                LocalFree(descriptor.cast());
                (control & SE_DACL_PROTECTED != 0, aces)
            }
        }
    }
}
