package devcert

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Names of the files [Bundle.WriteFiles] writes.
const (
	// CAFile holds the CA certificate (PEM). Clients trust it.
	CAFile = "ca.pem"
	// CAKeyFile holds the CA private key (PEM, PKCS #8), mode 0600.
	CAKeyFile = "ca-key.pem"
	// CertFile holds the leaf certificate alone (PEM), without the CA: see [Bundle.TLSCertificate].
	CertFile = "cert.pem"
	// KeyFile holds the leaf private key (PEM, PKCS #8), mode 0600.
	KeyFile = "key.pem"
)

// File modes of the files WriteFiles writes.
const (
	certMode fs.FileMode = 0o644
	keyMode  fs.FileMode = 0o600
	dirMode  fs.FileMode = 0o755
)

// WriteFiles writes the bundle into dir as [CAFile], [CAKeyFile], [CertFile] and [KeyFile], and
// returns the paths written, in that order. Certificates get mode 0644 and keys 0600 whatever the
// umask; dir is created with mode 0755 (less the umask) if missing. Existing files of those names
// are replaced; each file is written to a temporary name and renamed, so a reader never sees half
// a file. tls.LoadX509KeyPair(cert.pem, key.pem) loads the server side.
func (b *Bundle) WriteFiles(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("devcert: create directory: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode fs.FileMode
	}{
		{CAFile, b.CAPEM, certMode},
		{CAKeyFile, b.CAKeyPEM, keyMode},
		{CertFile, b.LeafPEM, certMode},
		{KeyFile, b.LeafKeyPEM, keyMode},
	}
	paths := make([]string, 0, len(files))
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if len(f.data) == 0 {
			return paths, fmt.Errorf("devcert: write %s: bundle has no data for it", path)
		}
		if err := writeFile(path, f.data, f.mode); err != nil {
			return paths, fmt.Errorf("devcert: write %s: %w", path, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// writeFile replaces path with data, mode exactly mode, through a temporary file in the same
// directory.
func writeFile(path string, data []byte, mode fs.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ignoreNotExist(os.Remove(tmp.Name())))
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return errors.Join(err, tmp.Close())
	}
	if _, err := tmp.Write(data); err != nil {
		return errors.Join(err, tmp.Close())
	}
	if err := tmp.Sync(); err != nil {
		return errors.Join(err, tmp.Close())
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ignoreNotExist returns nil for an error meaning the file is already gone.
func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
