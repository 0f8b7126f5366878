/*
 * NKeys (fanout/nkey.c), credentials files (fanout/nats_creds.c) and the
 * secret-free server names of fanout/nats_security.c, against known
 * vectors: the NATS documentation's user seed and public key, the signature
 * other NATS clients compute for a nonce with it, RFC 8032's first ed25519
 * test vector, and CRC-16/XMODEM's check value.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "nats_creds.h"
#include "nats_security.h"
#include "nkey.h"

#define SEED_VECTOR   "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
#define PUBLIC_VECTOR "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"

Test(nkey, crc16_is_xmodem)
{
    cr_assert_eq(nkey_crc16((const uint8_t *)"123456789", 9), 0x31C3);
    cr_assert_eq(nkey_crc16(NULL, 0), 0);
}

Test(nkey, seed_to_public_key)
{
    struct nkey k;
    char pub[NKEY_PUBLIC_CHARS + 1];
    cr_assert_eq(nkey_parse_seed(SEED_VECTOR, strlen(SEED_VECTOR), &k), RT_OK);
    cr_assert_eq(k.type, NKEY_USER);
    cr_assert_eq(nkey_public(&k, pub), RT_OK);
    cr_assert_str_eq(pub, PUBLIC_VECTOR);
    nkey_wipe(&k);
    for (size_t i = 0; i < sizeof(k.seed); i++)
        cr_assert_eq(k.seed[i], 0);
}

/* A nonce signed with the documentation's seed, as Dart's and Python's NATS clients sign it. */
Test(nkey, signature_of_a_nonce)
{
    static const char nonce[] = "DhXdTMAeiHhLDig";
    static const char want[] =
        "WosANJXgeyxerXFo0twRiMG-_ZjYp1K_46bFeFax705yFTCTjM18jWl01gGYk4KKbadiHd-hP3WgUQ2iLZUAAA";
    struct nkey k;
    uint8_t sig[NKEY_SIG_BYTES];
    char text[100];
    cr_assert_eq(nkey_parse_seed(SEED_VECTOR, strlen(SEED_VECTOR), &k), RT_OK);
    cr_assert_eq(nkey_sign(&k, nonce, strlen(nonce), sig), RT_OK);
    cr_assert_eq(nkey_base64url(sig, sizeof(sig), text), strlen(want));
    cr_assert_str_eq(text, want);
}

/* RFC 8032 §7.1 TEST 1: the seed, framed as an NKey here, gives the RFC's key and signature. */
Test(nkey, rfc8032_test_1)
{
    static const uint8_t seed[32] = {0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60,
                                     0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
                                     0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19,
                                     0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60};
    static const uint8_t want[64] = {
        0xe5, 0x56, 0x43, 0x00, 0xc3, 0x60, 0xac, 0x72, 0x90, 0x86, 0xe2, 0xcc, 0x80,
        0x6e, 0x82, 0x8a, 0x84, 0x87, 0x7f, 0x1e, 0xb8, 0xe5, 0xd9, 0x74, 0xd8, 0x73,
        0xe0, 0x65, 0x22, 0x49, 0x01, 0x55, 0x5f, 0xb8, 0x82, 0x15, 0x90, 0xa3, 0x3b,
        0xac, 0xc6, 0x1e, 0x39, 0x70, 0x1c, 0xf9, 0xb4, 0x6b, 0xd2, 0x5b, 0xf5, 0xf0,
        0x59, 0x5b, 0xbe, 0x24, 0x65, 0x51, 0x41, 0x43, 0x8e, 0x7a, 0x10, 0x0b};
    struct nkey k = {NKEY_USER, {0}};
    memcpy(k.seed, seed, 32);
    uint8_t sig[NKEY_SIG_BYTES];
    cr_assert_eq(nkey_sign(&k, "", 0, sig), RT_OK);
    cr_assert_eq(memcmp(sig, want, sizeof(want)), 0);
}

Test(nkey, bad_seeds_are_refused)
{
    struct nkey k;
    const char *bad[] = {
        "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VZ", /* checksum */
        "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3V",  /* length */
        "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VYA",
        "suacssl3uahudxkfsnvuzrf5uhpmwz6bfdtj7m6usdxiednppqyyycu3vy", /* alphabet */
        "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU1VY",
        PUBLIC_VECTOR "AA", /* a public key is no seed */
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(nkey_parse_seed(bad[i], strlen(bad[i]), &k), RT_INVAL, "took %s", bad[i]);
}

/* base64url without padding, for every length mod 3. */
Test(nkey, base64url)
{
    char out[16];
    cr_assert_eq(nkey_base64url((const uint8_t *)"\xfb\xff", 2, out), 3);
    cr_assert_str_eq(out, "-_8");
    cr_assert_eq(nkey_base64url((const uint8_t *)"f", 1, out), 2);
    cr_assert_str_eq(out, "Zg");
    cr_assert_eq(nkey_base64url((const uint8_t *)"foo", 3, out), 4);
    cr_assert_str_eq(out, "Zm9v");
}

#define JWT_VECTOR "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJzdWIiOiJVRFhVNCJ9.c2ln"

/* A .creds file as nsc writes it, with CRLF line ends, and one with blank lines in blocks. */
Test(creds, creds_files)
{
    const char *files[] = {
        "-----BEGIN NATS USER JWT-----\n" JWT_VECTOR "\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n" SEED_VECTOR "\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n",
        "-----BEGIN NATS USER JWT-----\r\n" JWT_VECTOR "\r\n------END NATS USER JWT------\r\n"
        "-----BEGIN USER NKEY SEED-----\r\n  " SEED_VECTOR "  \r\n------END USER NKEY "
        "SEED------\r\n",
        "---- x ----\n\n" JWT_VECTOR "\n\n---- y ----\n---- z ----\n" SEED_VECTOR "\n---- w ----",
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char *jwt = NULL, err[200] = "";
        struct nkey k;
        cr_assert_eq(ncreds_parse(files[i], strlen(files[i]), true, &jwt, &k, err, sizeof(err)),
                     RT_OK, "file %zu: %s", i, err);
        cr_expect_str_eq(jwt, JWT_VECTOR, "file %zu", i);
        char pub[NKEY_PUBLIC_CHARS + 1];
        nkey_public(&k, pub);
        cr_expect_str_eq(pub, PUBLIC_VECTOR, "file %zu", i);
        free(jwt);
    }
}

/* A seed file: the seed alone on a line (as nats.c looks for "SU"), or in a block. */
Test(creds, seed_files)
{
    const char *files[] = {SEED_VECTOR, "# my key\n\t" SEED_VECTOR "\n",
                           "-----BEGIN USER NKEY SEED-----\n" SEED_VECTOR "\n------END------\n"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char err[200] = "";
        struct nkey k;
        cr_expect_eq(ncreds_parse(files[i], strlen(files[i]), false, NULL, &k, err, sizeof(err)),
                     RT_OK, "file %zu: %s", i, err);
    }
}

Test(creds, bad_files_say_why)
{
    struct {
        const char *text;
        bool creds;
        const char *why;
    } cases[] = {
        {"", true, "no user JWT"},
        {SEED_VECTOR, true, "no user JWT"},
        {"-----BEGIN NATS USER JWT-----\nnot.a jwt\n------END------\n", true, "no user JWT"},
        {"-----BEGIN NATS USER JWT-----\n" JWT_VECTOR "\n------END------\n", true, "no NKey"},
        {"-----BEGIN NATS USER JWT-----\n" JWT_VECTOR "\n------END------\n"
         "-----BEGIN-----\nSUAAAA\n------END------\n",
         true, "not a valid NKey"},
        {"nothing\n", false, "no NKey user seed"},
        /* an account seed (SA...) signs no user in */
        {"-----BEGIN ACCOUNT NKEY "
         "SEED-----\nSAAAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4HYMHI\n"
         "------END ACCOUNT NKEY SEED------\n",
         false, "not a user seed"},
        {"SAAAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4HYMHI\n", false,
         "no NKey user seed"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *jwt = NULL, err[200] = "";
        struct nkey k;
        rt_status st = ncreds_parse(cases[i].text, strlen(cases[i].text), cases[i].creds,
                                    cases[i].creds ? &jwt : NULL, &k, err, sizeof(err));
        cr_expect_eq(st, RT_INVAL, "case %zu taken", i);
        cr_expect(strstr(err, cases[i].why), "case %zu: %s", i, err);
        cr_expect_null(jwt);
    }
}

/* What log lines show of --nats: host:port, never a scheme's credentials. */
Test(nats_security, urls_for_log)
{
    char buf[256];
    cr_assert_str_eq(
        nsec_urls_for_log("nats://u:p@ss@h1:4222, tls://tok3n@[::1]:4223/x,h3", buf, sizeof(buf)),
        "h1:4222,[::1]:4223,h3");
    cr_assert_str_eq(nsec_urls_for_log("", buf, sizeof(buf)), "");
    char tiny[8];
    nsec_urls_for_log("nats://user:secret@averylonghostname:4222", tiny, sizeof(tiny));
    cr_assert_null(strstr(tiny, "secret"));
    cr_assert_lt(strlen(tiny), sizeof(tiny));
}

Test(nats_security, tls_wanted)
{
    struct fo_nats_security sec;
    memset(&sec, 0, sizeof(sec));
    cr_assert_not(nsec_tls_wanted(NULL, "nats://h:1,h2"));
    cr_assert(nsec_tls_wanted(NULL, "nats://h:1, TLS://h2"));
    cr_assert_not(nsec_tls_wanted(&sec, "nats://h:1"));
    strcpy(sec.ca_file, "/ca.pem");
    cr_assert(nsec_tls_wanted(&sec, "nats://h:1"));
}

Test(nats_security, tool_flags)
{
    struct fo_nats_security sec;
    memset(&sec, 0, sizeof(sec));
    cr_assert_eq(nsec_set_flag(&sec, "--nats-creds", "/a.creds"), 1);
    cr_assert_str_eq(sec.creds_file, "/a.creds");
    cr_assert_eq(nsec_set_flag(&sec, "--nats-ca", "/ca.pem"), 1);
    cr_assert_str_eq(sec.ca_file, "/ca.pem");
    cr_assert_eq(nsec_set_flag(&sec, "--nats", "x"), 0);
    cr_assert_eq(nsec_set_flag(&sec, "--nats-nkey", ""), -1);
    char long_path[600];
    memset(long_path, 'a', sizeof(long_path) - 1);
    long_path[sizeof(long_path) - 1] = 0;
    cr_assert_eq(nsec_set_flag(&sec, "--nats-tls-key", long_path), -1);
}
