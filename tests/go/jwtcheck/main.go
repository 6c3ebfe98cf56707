// Command jwtcheck reads and writes credentials with the NATS reference libraries (nats-io/jwt/v2 and
// nats-io/nkeys), so the tests can check that dchat-ops and those libraries agree.
//
//	jwtcheck store HOME            decode, validate and chain-check every JWT, creds file and seed of a
//	                               dchat-ops home (nsc's layout); prints one JSON report
//	jwtcheck sign SEEDFILE DATAFILE    prints the Ed25519 signature of DATAFILE, base64url without padding
//	jwtcheck verify PUBKEY DATAFILE SIG    exit 0 when SIG (base64url) holds, 1 when it does not
//	jwtcheck activation TOKENFILE ACCOUNTJWTFILE    decode and validate an activation token and check that
//	                               the exporting account (its JWT in ACCOUNTJWTFILE) or one of its signing
//	                               keys issued it; prints one JSON entry
//	jwtcheck make DIR              makes an operator (with a signing key, strict), an account (signed by
//	                               that signing key, with a plain and a scoped signing key) and three users
//	                               (two signed by its signing key, one by its scoped key) as plain .jwt,
//	                               .nk and .creds files; prints what it made as JSON
//
// Exit codes: 0 ok, 1 a check failed, 2 bad usage or an unreadable input.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "store":
		if len(os.Args) != 3 {
			usage()
		}
		os.Exit(checkStore(os.Args[2]))
	case "sign":
		if len(os.Args) != 4 {
			usage()
		}
		os.Exit(sign(os.Args[2], os.Args[3]))
	case "verify":
		if len(os.Args) != 5 {
			usage()
		}
		os.Exit(verify(os.Args[2], os.Args[3], os.Args[4]))
	case "make":
		if len(os.Args) != 3 {
			usage()
		}
		os.Exit(makeFiles(os.Args[2]))
	case "activation":
		if len(os.Args) != 4 {
			usage()
		}
		os.Exit(checkActivation(os.Args[2], os.Args[3]))
	}
	usage()
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: jwtcheck store HOME | sign SEEDFILE DATAFILE | verify PUBKEY DATAFILE SIG | make DIR | activation TOKENFILE ACCOUNTJWTFILE")
	os.Exit(2)
}

func fail(format string, args ...interface{}) int {
	fmt.Fprintf(os.Stderr, "jwtcheck: "+format+"\n", args...)
	return 2
}

// --- store -------------------------------------------------------------------------------------

// Entry is what the reference library makes of one file.
type Entry struct {
	Path       string          `json:"path"`
	Kind       string          `json:"kind,omitempty"`
	Name       string          `json:"name,omitempty"`
	Subject    string          `json:"subject,omitempty"`
	Issuer     string          `json:"issuer,omitempty"`
	Chain      string          `json:"chain"` // "ok", or why the issuer is not trusted
	Errors     []string        `json:"errors"`
	Warnings   []string        `json:"warnings"`
	TimeChecks []string        `json:"time_checks"`
	Claims     json.RawMessage `json:"claims,omitempty"`
	Scope      string          `json:"scope,omitempty"`   // the role of the scoped key that signed a user
	Revoked    bool            `json:"revoked,omitempty"` // a user JWT its account's revocations cover
}

// Report is the whole answer of "store".
type Report struct {
	Operators []*Entry `json:"operators"`
	Accounts  []*Entry `json:"accounts"`
	Users     []*Entry `json:"users"`
	Creds     []*Entry `json:"creds"`
	Keys      []*Entry `json:"keys"`
	Problems  []string `json:"problems"`
}

func validate(e *Entry, c jwt.Claims) {
	vr := jwt.CreateValidationResults()
	c.Validate(vr)
	e.Errors, e.Warnings, e.TimeChecks = []string{}, []string{}, []string{}
	for _, i := range vr.Issues {
		switch {
		case i.Blocking:
			e.Errors = append(e.Errors, i.Description)
		case i.TimeCheck:
			e.TimeChecks = append(e.TimeChecks, i.Description)
		default:
			e.Warnings = append(e.Warnings, i.Description)
		}
	}
	d := c.Claims()
	e.Subject, e.Issuer, e.Name = d.Subject, d.Issuer, d.Name
	e.Claims, _ = json.Marshal(c)
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func checkStore(home string) int {
	r := &Report{Operators: []*Entry{}, Accounts: []*Entry{}, Users: []*Entry{}, Creds: []*Entry{}, Keys: []*Entry{}, Problems: []string{}}
	problem := func(format string, args ...interface{}) {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
	opDirs, _ := filepath.Glob(filepath.Join(home, "stores", "*"))
	if len(opDirs) == 0 {
		return fail("no operator under %s", filepath.Join(home, "stores"))
	}
	userTokens := map[string]string{} // operator/account/user -> token
	for _, opDir := range opDirs {
		opName := filepath.Base(opDir)
		e := &Entry{Path: filepath.Join(opDir, opName+".jwt"), Kind: "operator"}
		r.Operators = append(r.Operators, e)
		tok, err := readToken(e.Path)
		if err != nil {
			problem("%s: %v", e.Path, err)
			continue
		}
		op, err := jwt.DecodeOperatorClaims(tok)
		if err != nil {
			e.Chain = "decode: " + err.Error()
			continue
		}
		validate(e, op)
		e.Chain = "ok"
		if op.Issuer != op.Subject {
			e.Chain = "operator is not self-signed"
		}
		accDirs, _ := filepath.Glob(filepath.Join(opDir, "accounts", "*"))
		for _, accDir := range accDirs {
			accName := filepath.Base(accDir)
			ae := &Entry{Path: filepath.Join(accDir, accName+".jwt"), Kind: "account"}
			r.Accounts = append(r.Accounts, ae)
			atok, err := readToken(ae.Path)
			if err != nil {
				problem("%s: %v", ae.Path, err)
				continue
			}
			acc, err := jwt.DecodeAccountClaims(atok)
			if err != nil {
				ae.Chain = "decode: " + err.Error()
				continue
			}
			validate(ae, acc)
			ae.Chain = accountChain(op, acc)
			userFiles, _ := filepath.Glob(filepath.Join(accDir, "users", "*.jwt"))
			for _, uf := range userFiles {
				ue := &Entry{Path: uf, Kind: "user"}
				r.Users = append(r.Users, ue)
				utok, err := readToken(uf)
				if err != nil {
					problem("%s: %v", uf, err)
					continue
				}
				uc, err := jwt.DecodeUserClaims(utok)
				if err != nil {
					ue.Chain = "decode: " + err.Error()
					continue
				}
				validate(ue, uc)
				ue.Chain, ue.Scope = userChain(op, acc, uc)
				ue.Revoked = acc.IsClaimRevoked(uc)
				userTokens[opName+"/"+accName+"/"+strings.TrimSuffix(filepath.Base(uf), ".jwt")] = utok
			}
		}
	}
	credFiles, _ := filepath.Glob(filepath.Join(home, "keys", "creds", "*", "*", "*.creds"))
	for _, cf := range credFiles {
		ce := &Entry{Path: cf, Kind: "creds", Chain: "ok", Errors: []string{}, Warnings: []string{}, TimeChecks: []string{}}
		r.Creds = append(r.Creds, ce)
		checkCreds(ce, cf)
		rel, _ := filepath.Rel(filepath.Join(home, "keys", "creds"), cf)
		key := strings.TrimSuffix(filepath.ToSlash(rel), ".creds")
		b, _ := os.ReadFile(cf)
		tok, _ := jwt.ParseDecoratedJWT(b)
		if want, ok := userTokens[key]; !ok {
			ce.Chain = "no user JWT in the store for " + key
		} else if tok != want {
			ce.Chain = "the creds JWT is not the store's user JWT for " + key
		}
	}
	seedFiles, _ := filepath.Glob(filepath.Join(home, "keys", "keys", "*", "*", "*.nk"))
	for _, sf := range seedFiles {
		ke := &Entry{Path: sf, Kind: "seed", Chain: "ok", Errors: []string{}, Warnings: []string{}, TimeChecks: []string{}}
		r.Keys = append(r.Keys, ke)
		want := strings.TrimSuffix(filepath.Base(sf), ".nk")
		ke.Subject = want
		seed, err := readToken(sf)
		if err != nil {
			problem("%s: %v", sf, err)
			continue
		}
		kp, err := nkeys.FromSeed([]byte(seed))
		if err != nil {
			ke.Chain = "seed: " + err.Error()
			continue
		}
		pub, _ := kp.PublicKey()
		if pub != want {
			ke.Chain = "the seed's public key is " + pub
			continue
		}
		// sign and verify with the public key alone, as a server does with a nonce
		msg := []byte("nonce " + want)
		sig, err := kp.Sign(msg)
		if err == nil {
			pk, _ := nkeys.FromPublicKey(want)
			err = pk.Verify(msg, sig)
		}
		if err != nil {
			ke.Chain = "sign/verify: " + err.Error()
		}
	}
	out, _ := json.MarshalIndent(r, "", "  ")
	fmt.Println(string(out))
	return 0
}

// accountChain says whether the operator trusts the account's issuer, as nats-server decides it.
func accountChain(op *jwt.OperatorClaims, acc *jwt.AccountClaims) string {
	if !op.DidSign(acc) {
		if op.StrictSigningKeyUsage && acc.Issuer == op.Subject {
			return "strict operator: account signed by the operator's identity key"
		}
		return "account issuer " + acc.Issuer + " is not the operator nor one of its signing keys"
	}
	return "ok"
}

// userChain says whether the account trusts the user's issuer, and the role of a scoped signer.  As
// nats-server decides it: under a strict operator the account's identity key signs no user.
func userChain(op *jwt.OperatorClaims, acc *jwt.AccountClaims, uc *jwt.UserClaims) (string, string) {
	if uc.Issuer == acc.Subject {
		if op.StrictSigningKeyUsage {
			return "strict operator: user signed by the account's identity key", ""
		}
		if uc.IssuerAccount != "" && uc.IssuerAccount != acc.Subject {
			return "issuer_account " + uc.IssuerAccount + " is not the account", ""
		}
		return "ok", ""
	}
	if !acc.DidSign(uc) {
		return "user issuer " + uc.Issuer + " is not the account nor one of its signing keys", ""
	}
	if uc.IssuerAccount != acc.Subject {
		return "signed by a signing key but issuer_account is " + uc.IssuerAccount, ""
	}
	scope, _ := acc.SigningKeys.GetScope(uc.Issuer)
	if scope == nil {
		return "ok", ""
	}
	if err := scope.ValidateScopedSigner(uc); err != nil {
		return "scoped signer: " + err.Error(), ""
	}
	vr := jwt.CreateValidationResults()
	scope.Validate(vr)
	if vr.IsBlocking(false) {
		return "scope of " + uc.Issuer + " does not validate", ""
	}
	if us, ok := scope.(*jwt.UserScope); ok {
		return "ok", us.Role
	}
	return "ok", "?"
}

func checkCreds(e *Entry, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		e.Chain = err.Error()
		return
	}
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		e.Chain = "jwt: " + err.Error()
		return
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		e.Chain = "user jwt: " + err.Error()
		return
	}
	kp, err := jwt.ParseDecoratedUserNKey(b)
	if err != nil {
		e.Chain = "seed: " + err.Error()
		return
	}
	pub, _ := kp.PublicKey()
	e.Subject, e.Issuer, e.Name = uc.Subject, uc.Issuer, uc.Name
	if pub != uc.Subject {
		e.Chain = "the seed is not the user's key"
	}
	if nk, err := jwt.ParseDecoratedNKey(b); err != nil {
		e.Chain = "nkey: " + err.Error()
	} else if p, _ := nk.PublicKey(); p != pub {
		e.Chain = "ParseDecoratedNKey and ParseDecoratedUserNKey disagree"
	}
}

// --- sign / verify -----------------------------------------------------------------------------

func sign(seedFile, dataFile string) int {
	seed, err := readToken(seedFile)
	if err != nil {
		return fail("%v", err)
	}
	kp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		return fail("seed: %v", err)
	}
	data, err := os.ReadFile(dataFile)
	if err != nil {
		return fail("%v", err)
	}
	sig, err := kp.Sign(data)
	if err != nil {
		return fail("sign: %v", err)
	}
	fmt.Println(base64.RawURLEncoding.EncodeToString(sig))
	return 0
}

func verify(public, dataFile, signature string) int {
	pk, err := nkeys.FromPublicKey(public)
	if err != nil {
		return fail("public key: %v", err)
	}
	data, err := os.ReadFile(dataFile)
	if err != nil {
		return fail("%v", err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(strings.TrimSpace(signature), "="))
	if err != nil {
		return fail("signature: %v", err)
	}
	if err := pk.Verify(data, sig); err != nil {
		fmt.Println("invalid")
		return 1
	}
	fmt.Println("valid")
	return 0
}

// --- make --------------------------------------------------------------------------------------

type made struct {
	dir   string
	items map[string]string
}

func (m *made) key(name string, create func() (nkeys.KeyPair, error)) nkeys.KeyPair {
	kp, err := create()
	if err != nil {
		panic(err)
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	m.write(name+".nk", string(seed)+"\n", 0o600)
	m.items[name] = pub
	return kp
}

func (m *made) write(name, text string, mode os.FileMode) {
	if err := os.WriteFile(filepath.Join(m.dir, name), []byte(text), mode); err != nil {
		panic(err)
	}
}

func pubOf(kp nkeys.KeyPair) string {
	p, _ := kp.PublicKey()
	return p
}

func makeFiles(dir string) int {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail("%v", err)
	}
	m := &made{dir: dir, items: map[string]string{}}

	opKP := m.key("operator", nkeys.CreateOperator)
	opSK := m.key("operator-sk", nkeys.CreateOperator)
	sysKP := m.key("system", nkeys.CreateAccount)
	accKP := m.key("account", nkeys.CreateAccount)
	accSK := m.key("account-sk", nkeys.CreateAccount)
	accScoped := m.key("account-scoped", nkeys.CreateAccount)

	oc := jwt.NewOperatorClaims(pubOf(opKP))
	oc.Name = "goop"
	oc.SigningKeys.Add(pubOf(opSK))
	oc.StrictSigningKeyUsage = true
	oc.SystemAccount = pubOf(sysKP)
	oc.Tags.Add("made-by-go")
	opJWT, err := oc.Encode(opKP)
	if err != nil {
		return fail("operator: %v", err)
	}
	m.write("goop.jwt", opJWT+"\n", 0o644)

	sc := jwt.NewAccountClaims(pubOf(sysKP))
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(opSK)
	if err != nil {
		return fail("system account: %v", err)
	}
	m.write("SYS.jwt", sysJWT+"\n", 0o644)

	ac := jwt.NewAccountClaims(pubOf(accKP))
	ac.Name = "goacc"
	ac.Limits.Conn = 100
	ac.Limits.Subs = 1000
	ac.Limits.Payload = 65536
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: 1 << 20, DiskStorage: 1 << 24, Streams: 5, Consumer: 20}
	ac.SigningKeys.Add(pubOf(accSK))
	scope := jwt.NewUserScope()
	scope.Key = pubOf(accScoped)
	scope.Role = "reader"
	scope.Template.Sub.Allow.Add("news.>", "_INBOX.>")
	scope.Template.Pub.Deny.Add(">")
	ac.SigningKeys.AddScopedSigner(scope)
	ac.Exports.Add(&jwt.Export{Name: "news", Subject: "news.>", Type: jwt.Stream})
	ac.Tags.Add("made-by-go")
	accJWT, err := ac.Encode(opSK)
	if err != nil {
		return fail("account: %v", err)
	}
	m.write("goacc.jwt", accJWT+"\n", 0o644)

	addUser := func(name string, signer nkeys.KeyPair, edit func(*jwt.UserClaims)) error {
		ukp := m.key("user-"+name, nkeys.CreateUser)
		uc := jwt.NewUserClaims(pubOf(ukp))
		uc.Name = name
		if pubOf(signer) != pubOf(accKP) {
			uc.IssuerAccount = pubOf(accKP)
		}
		edit(uc)
		tok, err := uc.Encode(signer)
		if err != nil {
			return err
		}
		seed, _ := ukp.Seed()
		creds, err := jwt.FormatUserConfig(tok, seed)
		if err != nil {
			return err
		}
		m.write(name+".creds", string(creds), 0o600)
		return nil
	}
	if err := addUser("alice", accSK, func(uc *jwt.UserClaims) {
		uc.Pub.Allow.Add("chat.>")
		uc.Sub.Allow.Add("chat.>", "_INBOX.>")
		uc.Sub.Deny.Add("chat.secret")
		uc.Limits.Subs = 50
		uc.Expires = time.Now().Add(90 * 24 * time.Hour).Unix()
	}); err != nil {
		return fail("user alice: %v", err)
	}
	if err := addUser("bob", accSK, func(uc *jwt.UserClaims) {
		uc.Pub.Allow.Add("chat.bob.>")
		uc.AllowedConnectionTypes.Add(jwt.ConnectionTypeStandard, jwt.ConnectionTypeWebsocket)
		uc.Tags.Add("made-by-go")
	}); err != nil {
		return fail("user bob: %v", err)
	}
	if err := addUser("carol", accScoped, func(uc *jwt.UserClaims) { uc.SetScoped(true) }); err != nil {
		return fail("user carol: %v", err)
	}
	out, _ := json.MarshalIndent(m.items, "", "  ")
	fmt.Println(string(out))
	return 0
}

// --- activation ----------------------------------------------------------------------------------

func checkActivation(tokenFile, accountFile string) int {
	token, err := readToken(tokenFile)
	if err != nil {
		return fail("%v", err)
	}
	accToken, err := readToken(accountFile)
	if err != nil {
		return fail("%v", err)
	}
	acc, err := jwt.DecodeAccountClaims(accToken)
	if err != nil {
		return fail("account %s: %v", accountFile, err)
	}
	e := &Entry{Path: tokenFile, Kind: "activation"}
	ac, err := jwt.DecodeActivationClaims(token)
	if err != nil {
		e.Chain = "undecodable"
		e.Errors = []string{err.Error()}
	} else {
		validate(e, ac)
		switch {
		case ac.Issuer == acc.Subject:
			e.Chain = "ok"
		case acc.SigningKeys.Contains(ac.Issuer) && ac.IssuerAccount == acc.Subject:
			e.Chain = "ok"
		default:
			e.Chain = "issuer is neither the exporting account nor one of its signing keys"
		}
	}
	out, _ := json.Marshal(e)
	fmt.Println(string(out))
	if e.Chain != "ok" || len(e.Errors) > 0 {
		return 1
	}
	return 0
}
