package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// writeCerts makes a CA and one certificate for 127.0.0.1 that serves as
// the member's server, peer and client certificate, as the example config
// uses one pair per server.
func writeCerts(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "dhcp-a"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(k)
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, block := range map[string]*pem.Block{ca: {Type: "CERTIFICATE", Bytes: caDER}, cert: {Type: "CERTIFICATE", Bytes: der}, key: {Type: "EC PRIVATE KEY", Bytes: kb}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

// TestEmbeddedMemberTLS: an embedded member with https URLs serves its
// peers and clients with the configured certificates, and requires client
// certificates signed by the CA.
func TestEmbeddedMemberTLS(t *testing.T) {
	testenv.TCPLoopback(t)
	dir := t.TempDir()
	ca, cert, key := writeCerts(t, dir)
	peer := fmt.Sprintf("https://127.0.0.1:%d", testenv.FreeTCPPort(t))
	c := config.Cluster{Name: "dhcp-a", LeaseTTL: 2 * time.Second, Timeout: 5 * time.Second,
		Etcd: config.ClusterEtcd{Prefix: "/pd/", CAFile: ca, CertFile: cert, KeyFile: key},
		Embedded: config.ClusterEmbedded{DataDir: filepath.Join(dir, "etcd"), PeerListen: peer,
			ClientListen: fmt.Sprintf("https://127.0.0.1:%d", testenv.FreeTCPPort(t)), InitialCluster: "dhcp-a=" + peer, InitialClusterState: "new"}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Start(ctx, c, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := n.Client.Put(ctx, "/pd/x", "y"); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
	// A client without a certificate is refused.
	bare := c
	bare.Etcd.CertFile, bare.Etcd.KeyFile = "", ""
	other, err := Connect(ctx, bare)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	short, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	if _, err := other.Client.Get(short, "/pd/x"); err == nil {
		t.Fatal("a client without a certificate read the table")
	}
}
