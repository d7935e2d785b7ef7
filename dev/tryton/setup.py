"""Sets up a freshly activated Tryton database for mailstream's tests (run by dev/install with
the Tryton venv's python): a currency (USD), a company with an employee, the admin user in that
company, and a validated REST user-application key for admin, printed on stdout.

Usage: setup.py CONFIG_FILE DATABASE
"""
import sys
from decimal import Decimal


def main(config_file, database):
    from trytond import config
    config.update_etc(config_file)
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    pool = Pool(database)
    with Transaction().start(database, 0, readonly=True):
        pool.init()
    with Transaction().start(database, 0) as transaction:
        Currency = pool.get('currency.currency')
        Party = pool.get('party.party')
        Company = pool.get('company.company')
        Employee = pool.get('company.employee')
        User = pool.get('res.user')
        Application = pool.get('res.user.application')

        usd, = Currency.create([{
            'name': 'US Dollar', 'code': 'USD', 'symbol': '$',
            'rounding': Decimal('0.01'), 'digits': 2}])
        company_party, desk_party = Party.create([
            {'name': 'Mailstream Dev'}, {'name': 'Mailstream Sales Desk'}])
        company, = Company.create([{'party': company_party.id, 'currency': usd.id}])
        employee, = Employee.create([{'party': desk_party.id, 'company': company.id}])
        admin, = User.search([('login', '=', 'admin')])
        User.write([admin], {
            'companies': [('add', [company.id])], 'company': company.id,
            'employees': [('add', [employee.id])], 'employee': employee.id})
        key, = Application.create([{
            'user': admin.id, 'application': 'rest', 'state': 'validated'}])
        transaction.commit()
        print(key.key)


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
